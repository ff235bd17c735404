"""What a mask costs and saves: analytic FLOPs and parameters, and measured latency of the pruned model.

FLOPs (forward, per token), after Kaplan et al. 2020 (Table 1) and nanoGPT's `estimate_mfu`: 2 FLOPs per
multiply-accumulate of every linear layer in the transformer blocks (q/k/v/o of the kept heads, the
feed-forward block) and of the task head (LM head per token; a classifier's pooler/head once per sequence,
so divided by `seq_len`), plus the attention matmuls, 2·2·T·d_head per kept head per token (scores q·kᵀ and
the weighted sum of values; T = seq_len for bidirectional encoders, (seq_len+1)/2 on average for causal
decoders). Embedding lookups, LayerNorms, softmax and activations are not counted.
"""
from __future__ import annotations

import copy
import statistics
import time
from typing import Callable

import torch
from torch import nn

from . import arch
from .units import kv_cache_bytes_per_token

Progress = Callable[[float, str], None]


def _linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) of a Linear or GPT-2 Conv1D, else None."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":
        return module.weight.shape[0], module.weight.shape[1]
    return None


def _removed_heads(model, keep) -> list[tuple[int, int, int]]:
    """Per layer: (stored query heads, query heads removed by `keep`, KV heads removed by `keep`)."""
    keep = arch.to_keep_tensor(keep, model)
    group = arch.kv_group_of(model)
    out = []
    for layer, (heads, kv_heads) in enumerate(zip(arch.present_heads(model), arch.present_kv_heads(model))):
        removed = [h for h in heads if not keep[layer, h]]
        kept_groups = {group[h] for h in heads if keep[layer, h]}
        removed_kv = len({g for g in kv_heads if g not in kept_groups})
        if not arch.adapter_for(model).gqa:
            removed_kv = len(removed)
        out.append((len(heads), len(removed), removed_kv))
    return out


def _attention_bias_flags(model, block: nn.Module) -> tuple[bool, bool]:
    """Whether the query and key/value projections of `block` carry a bias."""
    adapter = arch.adapter_for(model)
    if adapter.fused_qkv:
        has = arch.get_path(block, adapter.fused_qkv).bias is not None
        return has, has
    return arch.get_path(block, adapter.q).bias is not None, arch.get_path(block, adapter.k).bias is not None


def flops_per_token(model, keep=None, seq_len: int = 128) -> int:
    """Analytic forward FLOPs per token of `model` with the heads where keep=False removed (see module doc)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be a positive number of tokens, got {seq_len}")
    keep = arch.to_keep_tensor(keep, model) if keep is not None else None
    dh, hidden = arch.head_dim(model), int(model.config.hidden_size)
    causal = arch.task_of(model) == "causal-lm"
    context = (seq_len + 1) / 2 if causal else seq_len
    blocks = arch.blocks(model)
    removed = _removed_heads(model, keep) if keep is not None else [(len(h), 0, 0) for h in arch.present_heads(model)]
    macs = 0.0
    block_modules = set()
    for block, (stored, gone, gone_kv) in zip(blocks, removed):
        for module in block.modules():
            block_modules.add(module)
            shape = _linear_shape(module)
            if shape is not None:
                macs += shape[0] * shape[1]
        macs -= gone * 2 * dh * hidden + gone_kv * 2 * dh * hidden  # q rows + o columns; k and v rows
        macs += (stored - gone) * 2 * context * dh  # q·kᵀ and probs·v
    per_sequence = 1.0 if causal or arch.task_of(model) == "masked-lm" else 1.0 / seq_len
    for module in model.modules():
        if module not in block_modules:
            shape = _linear_shape(module)
            if shape is not None:
                macs += shape[0] * shape[1] * per_sequence
    return int(round(2 * macs))


def params_after(model, keep) -> int:
    """Parameters left after `prune(model, keep)` (tied weights once; GQA: ideal, without the KV copies
    `prune` stores when kept groups keep different numbers of query heads)."""
    dh, hidden = arch.head_dim(model), int(model.config.hidden_size)
    total = arch.parameter_count(model)
    for block, (_, gone, gone_kv) in zip(arch.blocks(model), _removed_heads(model, keep)):
        q_bias, kv_bias = _attention_bias_flags(model, block)
        total -= gone * dh * (hidden + q_bias) + gone * dh * hidden  # q rows (+bias), o columns
        total -= gone_kv * 2 * dh * (hidden + kv_bias)  # k and v rows (+bias)
    return int(total)


def synthetic_batch(model, batch_size: int, seq_len: int, *, seed: int = 0, device=None) -> dict:
    """Valid inputs for timing: token ids drawn from the vocabulary (ids >= 3, clear of the usual specials)
    and a full attention mask, (B, T) each."""
    vocab = int(model.config.vocab_size)
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if positions and seq_len > positions:
        raise ValueError(f"seq_len {seq_len} exceeds the model's {positions} positions; choose a smaller seq_len")
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(3, vocab - 1), vocab, (batch_size, seq_len), generator=gen)  # (B, T)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def _time_forwards(models: list, batch: dict, repeats: int, warmup: int, sync: bool, progress) -> list[list[float]]:
    """Milliseconds per forward pass of each model, runs interleaved (a, b, a, b, ...) so that background load
    on a shared machine hits all models alike; the first `warmup` rounds are not timed."""
    extra = {"use_cache": False} if arch.task_of(models[0]) == "causal-lm" else {}
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for i in range(warmup + repeats):
            for k, m in enumerate(models):
                start = time.perf_counter()
                m(**batch, **extra)
                if sync:
                    torch.cuda.synchronize()
                if i >= warmup:
                    times[k].append((time.perf_counter() - start) * 1000)
            if progress is not None:
                progress((i + 1) / (warmup + repeats), f"timing round {i + 1}/{warmup + repeats}")
    return times


def _summary(model, times: list[float], seq_len: int) -> dict:
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
    out = {"latency_ms_median": statistics.median(times), "latency_ms_p10": q[0], "latency_ms_p90": q[-1],
           "params": arch.parameter_count(model), "flops_per_token": flops_per_token(model, None, seq_len)}
    if arch.task_of(model) == "causal-lm":
        out["kv_cache_bytes_per_token"] = kv_cache_bytes_per_token(model)
    return out


def measure(model, keep, *, batch_size: int = 8, seq_len: int = 128, repeats: int = 20, warmup: int = 3,
            threads: int | None = None, device=None, progress: Progress | None = None) -> dict:
    """Time dense vs physically pruned (`headprune.prune.prune(model, keep)`) forward passes.

    Synthetic valid inputs (B=batch_size, T=seq_len), `torch.inference_mode`, `warmup` untimed passes, then
    `repeats` timed ones, dense and pruned interleaved; `threads` fixes `torch.set_num_threads` during the measurement (restored after);
    CUDA is synchronised after every pass. Returns {"dense": {...}, "pruned": {...}, "time_ratio",
    "flop_ratio", "speedup", "warning", "batch_size", "seq_len", "repeats", "threads", "device"}; each side
    has latency_ms_median/p10/p90, params, flops_per_token (and kv_cache_bytes_per_token for decoders).
    time_ratio = pruned median / dense median; time_ratio_paired = median over rounds of pruned/dense of the
    same round (steadier when the machine's load drifts).
    """
    from .prune import prune

    if repeats < 1 or warmup < 0:
        raise ValueError("repeats must be >= 1 and warmup >= 0")
    keep = arch.to_keep_tensor(keep, model)
    current = next(model.parameters()).device
    device = torch.device(device) if device is not None else current
    dense = model if device == current else copy.deepcopy(model).to(device)
    pruned = prune(dense, keep)
    batch = synthetic_batch(model, batch_size, seq_len, device=device)
    sync = device.type == "cuda"
    old_threads = torch.get_num_threads()
    was_training = dense.training
    dense.eval(), pruned.eval()
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        dense_times, pruned_times = _time_forwards([dense, pruned], batch, repeats, warmup, sync, progress)
        results = {"dense": _summary(dense, dense_times, seq_len), "pruned": _summary(pruned, pruned_times, seq_len)}
    finally:
        torch.set_num_threads(old_threads)
        dense.train(was_training)
    time_ratio = results["pruned"]["latency_ms_median"] / results["dense"]["latency_ms_median"]
    flop_ratio = results["pruned"]["flops_per_token"] / results["dense"]["flops_per_token"]
    paired = statistics.median(p / d for p, d in zip(pruned_times, dense_times))
    results.update(time_ratio=time_ratio, time_ratio_paired=paired, flop_ratio=flop_ratio, speedup=1 / time_ratio,
                   warning=_gain_warning(time_ratio, flop_ratio, batch_size, seq_len),
                   batch_size=batch_size, seq_len=seq_len, repeats=repeats,
                   threads=int(threads) if threads is not None else old_threads, device=str(device))
    return results


def _gain_warning(time_ratio: float, flop_ratio: float, batch_size: int, seq_len: int) -> str | None:
    """A sentence when the measured time saving is far below the FLOP saving."""
    flop_gain, time_gain = 1 - flop_ratio, 1 - time_ratio
    if flop_gain < 0.05 or time_gain >= 0.5 * flop_gain:
        return None
    measured = f"{time_gain:.0%} faster" if time_gain > 0 else f"not faster (time ratio {time_ratio:.2f})"
    return (f"The pruned model is {measured} although it needs {flop_gain:.0%} fewer FLOPs: with "
            f"{batch_size}×{seq_len} tokens per pass the run is likely overhead-bound (kernel launches, Python) "
            "or memory-bound, so smaller matrices save less than their FLOPs; larger batches or longer inputs "
            "show more of the gain.")
