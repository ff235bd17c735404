"""Tiny randomly initialised models of every supported family, built from configs (no download).

For tests, demos and teaching: a large `initializer_range` makes every head matter visibly, so masking one
changes the output. `tiny_model("llama")` has grouped-query attention (6 query heads in 2 KV groups).
"""
from __future__ import annotations

import torch
import transformers

TINY_VOCAB = 128

_CONFIGS = {
    "bert": ("BertConfig", dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37)),
    "roberta": ("RobertaConfig", dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37, pad_token_id=1)),
    "electra": ("ElectraConfig", dict(hidden_size=32, embedding_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37)),
    "distilbert": ("DistilBertConfig", dict(dim=32, n_layers=3, n_heads=4, hidden_dim=37)),
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=3, n_head=4, n_positions=64)),
    "llama": ("LlamaConfig", dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2, intermediate_size=37, max_position_embeddings=64)),
    "mistral": ("MistralConfig", dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=3, intermediate_size=37, max_position_embeddings=64, sliding_window=None)),
    "qwen2": ("Qwen2Config", dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2, intermediate_size=37, max_position_embeddings=64)),
}
_HEADS = {
    "classification": "AutoModelForSequenceClassification",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
}
DEFAULT_TASK = {"gpt2": "causal-lm", "llama": "causal-lm", "mistral": "causal-lm", "qwen2": "causal-lm"}
TINY_FAMILIES = tuple(_CONFIGS)


def tiny_config(family: str, *, num_labels: int = 3, initializer_range: float = 0.3, **overrides):
    """The config of a tiny `family` model (see `TINY_FAMILIES`)."""
    if family not in _CONFIGS:
        raise ValueError(f"no tiny config for {family!r}; choose one of {', '.join(TINY_FAMILIES)}")
    class_name, kwargs = _CONFIGS[family]
    kwargs = {**kwargs, "vocab_size": TINY_VOCAB, "initializer_range": initializer_range, "num_labels": num_labels, **overrides}
    if family in ("gpt2", "llama", "mistral", "qwen2"):
        kwargs.setdefault("pad_token_id", 0)
    return getattr(transformers, class_name)(**kwargs)


def tiny_model(family: str = "bert", task: str | None = None, *, seed: int = 0, **overrides):
    """A tiny random `family` model for `task` (default: classification for encoders, causal-lm for
    decoders), in eval mode, fp32, with sdpa attention where available."""
    task = task or DEFAULT_TASK.get(family, "classification")
    if task not in _HEADS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(_HEADS)}")
    torch.manual_seed(seed)
    config = tiny_config(family, **overrides)
    auto = getattr(transformers, _HEADS[task])
    return auto.from_config(config).eval()


def tiny_batch(model, *, batch_size: int = 4, seq_len: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random batch for `model` with ragged padding (right-padded) and task-appropriate labels."""
    from .arch import task_of

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, TINY_VOCAB, (batch_size, seq_len), generator=gen)
    lengths = torch.randint(seq_len // 2, seq_len + 1, (batch_size,), generator=gen)
    lengths[0] = seq_len
    attention = (torch.arange(seq_len)[None] < lengths[:, None]).long()
    ids = ids.masked_fill(attention == 0, 0)
    task = task_of(model)
    if task == "classification":
        labels = torch.randint(0, model.config.num_labels, (batch_size,), generator=gen)
    else:
        labels = ids.masked_fill(attention == 0, -100)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}
