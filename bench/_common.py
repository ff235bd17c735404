"""What several benchmarks load: the MiniLM default classifier (the built `minilm-tweets` preset, else raw
all-MiniLM-L6-v2 with a fresh 3-label head)."""
from __future__ import annotations

import torch
import transformers


def minilm_classifier():
    """(model in eval mode, tokenizer, where it came from)."""
    from headprune.presets.registry import minilm_base_dir, preset_dir, preset_meta

    if preset_meta("minilm-tweets") is not None:
        folder, source = preset_dir("minilm-tweets"), "preset minilm-tweets"
    else:
        folder, source = minilm_base_dir(), "raw all-MiniLM-L6-v2 (random 3-label head)"
    transformers.logging.set_verbosity_error()
    model = transformers.BertForSequenceClassification.from_pretrained(str(folder), num_labels=3, dtype=torch.float32)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_base_dir()))
    return model.eval(), tokenizer, source
