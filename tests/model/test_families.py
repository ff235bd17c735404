"""Every family through every intervention, on its tiny config: exact masking, nothing left behind, and no
family fact outside the adapters."""
from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pytest
import torch

from headprune.model import adapters, intervene, layout
from headprune.model.forward import forward_logits
from headprune.model.surgery import prune
from headprune.model.tiny import TINY_FAMILIES, tiny_batch, tiny_model

ENGINE = Path(__file__).resolve().parents[2] / "headprune"


def _hooks_and_wrappers(model) -> list:
    """Everything headprune could have left on a model: its hooks and its forward wrappers."""
    left = []
    for name, module in model.named_modules():
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            left += [(name, fn) for fn in hooks.values() if fn in intervene._HOOKS]
        if "forward" in module.__dict__:
            left.append((name, "forward"))
    return left


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_every_intervention_leaves_nothing_behind(family):
    model = tiny_model(family)
    batch = tiny_batch(model)
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, 0] = keep[1, -1] = False
    dense = forward_logits(model, batch)
    with torch.no_grad(), intervene.capture_out_inputs(model) as captured:
        forward_logits(model, batch)
    contexts = [
        lambda: intervene.masked(model, keep),
        lambda: intervene.gated(model, keep.float()[:, None, :].expand(-1, 4, -1)),
        lambda: intervene.replaced_projections(model, {0: (layout.out_projections(model)[0].weight * 0.5, None)}),
        lambda: intervene.capture_out_inputs(model),
        lambda: intervene.layer_plan(model, 1, None, []),
        lambda: intervene.replay_attention(model, 0, captured[0][0]),
        lambda: intervene.attention_view(model),
        lambda: intervene.inference_view(model),
    ]
    for make in contexts:
        with torch.no_grad(), make():
            forward_logits(model, batch)
        assert not intervene.attached(model) and not _hooks_and_wrappers(model), make
    torch.testing.assert_close(forward_logits(model, batch), dense)  # and the model computes as before


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_masking_equals_pruning_and_copies_carry_nothing(family):
    model = tiny_model(family)
    batch = tiny_batch(model)
    keep = torch.rand(layout.head_grid(model), generator=torch.Generator().manual_seed(3)) > 0.4
    keep[2] = False  # a layer without heads
    with torch.no_grad():
        with intervene.masked(model, keep):
            expected = forward_logits(model, batch)
            copy = intervene.private_copy(model)  # taken while the shared model carries dispatchers
        got = forward_logits(prune(model, keep), batch)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not _hooks_and_wrappers(copy)


def test_qwen3_q_k_norms_are_shared_by_heads_and_survive_pruning():
    model = tiny_model("qwen3")
    keep = torch.ones(layout.head_grid(model), dtype=torch.bool)
    keep[0, :3] = False  # a whole KV group of layer 0
    attention = layout.attention_modules(prune(model, keep))[0]
    assert attention.q_norm.weight.shape == (layout.head_dim(model),) and attention.k_proj.out_features == 8


def _code_tokens(path: Path) -> list[str]:
    """Names and string literals of a module, without its docstrings and comments."""
    tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline))
    out, previous = [], tokenize.NEWLINE
    for tok in tokens:
        docstring = tok.type == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
        if tok.type in (tokenize.NAME, tokenize.STRING) and not docstring:
            out.append(tok.string)
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            previous = tok.type
    return out


def test_no_family_name_or_model_class_outside_the_adapters():
    names = {t for a in adapters.adapters() for t in (a.family, *a.model_types)} - {"vit"}
    classes = ("Bert", "Roberta", "Electra", "DistilBert", "GPT2", "Llama", "Mistral", "Qwen", "ViT")
    offenders = []
    for path in sorted(ENGINE.rglob("*.py")):
        if "families" in path.parts or path.name == "adapters.py":
            continue
        for token in _code_tokens(path):
            bare = token.strip("\"'")
            if bare in names or any(token.startswith(c) and token[len(c):][:1].isupper() for c in classes):
                offenders.append(f"{path.relative_to(ENGINE)}: {token}")
    assert not offenders, offenders
