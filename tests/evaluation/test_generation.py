"""Greedy generation under a mask (headprune.evaluation.generation) equals the pruned model's own generate."""
from __future__ import annotations

import pytest
import torch

from headprune.evaluation.generation import greedy_continuation
from headprune.model.surgery import prune
from headprune.model.tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread of a shared machine


def test_greedy_continuation_under_a_mask_equals_the_pruned_models_generate():
    model = tiny_model("llama")
    keep = torch.ones(3, 6, dtype=torch.bool)
    keep[0, :3] = keep[2, 4] = False
    prompt = [5, 9, 17, 3]
    masked_ids = greedy_continuation(model, prompt, keep=keep, max_new_tokens=8)
    pruned = prune(model, keep)
    expected = pruned.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, min_new_tokens=8,
                               pad_token_id=0)[0, len(prompt):].tolist()
    assert masked_ids == expected
    assert greedy_continuation(model, prompt, max_new_tokens=8) != masked_ids  # the mask changes the text
    assert greedy_continuation(model, prompt, keep=keep, max_new_tokens=8) == masked_ids  # deterministic
    with pytest.raises(ValueError, match="causal language model"):
        greedy_continuation(tiny_model("bert"), prompt)
    with pytest.raises(ValueError, match="from 1 to"):
        greedy_continuation(model, prompt, max_new_tokens=0)
