"""Measured latency of the physically pruned model vs the dense one (PyTorch), interleaved and warmed up.
ONNX Runtime, and both side by side: `headprune.deploy.measure_onnx`, `headprune.compare_runtimes`."""
from __future__ import annotations

import statistics
import time

import torch

from ..core.errors import UserError
from ..core.progress import Progress, report
from ..model.adapters import adapter_for
from ..model.intervene import inference_view, private_copy
from ..model.layout import max_positions, parameter_count, task_of, to_keep_tensor
from ..model.surgery import prune
from ..model.units import kv_cache_bytes_per_token
from .cost import flops_per_token


def check_seq_len(model, seq_len: int) -> None:
    """`UserError` when `model` cannot read `seq_len` tokens (more than its position embeddings)."""
    positions = max_positions(model)
    if positions and seq_len > positions:
        raise UserError(f"seq_len {seq_len} exceeds the model's {positions} positions; choose a smaller seq_len",
                        option="seq_len")


def synthetic_batch(model, batch_size: int, seq_len: int, *, seed: int = 0, device=None) -> dict:
    """Valid inputs for timing: token ids drawn from the vocabulary (ids >= 3, clear of the usual specials)
    and a full attention mask, (B, T) each."""
    vocab = int(model.config.vocab_size)
    check_seq_len(model, seq_len)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(3, vocab - 1), vocab, (batch_size, seq_len), generator=gen)  # (B, T)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return {k: v.to(device) for k, v in batch.items()} if device is not None else batch


def _time_forwards(models: list, batch: dict, repeats: int, warmup: int, sync: bool, progress) -> list[list[float]]:
    """Milliseconds per forward pass of each model, runs interleaved (a, b, a, b, ...) so that background load
    on a shared machine hits all models alike; the first `warmup` rounds are not timed."""
    extra = {"use_cache": False} if adapter_for(models[0]).causal else {}
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
            report(progress, (i + 1) / (warmup + repeats), f"timing round {i + 1}/{warmup + repeats}")
    return times


def _summary(model, times: list[float], seq_len: int) -> dict:
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
    out = {"latency_ms_median": statistics.median(times), "latency_ms_p10": q[0], "latency_ms_p90": q[-1],
           "params": parameter_count(model), "flops_per_token": flops_per_token(model, None, seq_len)}
    if task_of(model) == "causal-lm":
        out["kv_cache_bytes_per_token"] = kv_cache_bytes_per_token(model)
    return out


def measure(model, keep, *, batch_size: int = 8, seq_len: int = 128, repeats: int = 20, warmup: int = 3,
            threads: int | None = None, device=None, progress: Progress | None = None) -> dict:
    """Time dense vs physically pruned (`headprune.model.surgery.prune(model, keep)`) forward passes.

    Synthetic valid inputs (B=batch_size, T=seq_len), `torch.inference_mode`, `warmup` untimed passes, then
    `repeats` timed ones, dense and pruned interleaved; `threads` fixes `torch.set_num_threads` during the measurement (restored after);
    CUDA is synchronised after every pass. Returns {"dense": {...}, "pruned": {...}, "time_ratio",
    "flop_ratio", "speedup", "warning", "batch_size", "seq_len", "repeats", "threads", "device"}; each side
    has latency_ms_median/p10/p90, params, flops_per_token (and kv_cache_bytes_per_token for decoders).
    time_ratio = pruned median / dense median; time_ratio_paired = median over rounds of pruned/dense of the
    same round (steadier when the machine's load drifts).
    """
    if repeats < 1 or warmup < 0:
        raise UserError("repeats must be >= 1 and warmup >= 0")
    keep = to_keep_tensor(keep, model)
    current = next(model.parameters()).device
    device = torch.device(device) if device is not None else current
    source = model if device == current else private_copy(model).to(device)
    pruned = prune(source, keep).eval()
    batch = synthetic_batch(model, batch_size, seq_len, device=device)
    sync = device.type == "cuda"
    old_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        with inference_view(source) as dense:
            dense_times, pruned_times = _time_forwards([dense, pruned], batch, repeats, warmup, sync, progress)
        results = {"dense": _summary(source, dense_times, seq_len), "pruned": _summary(pruned, pruned_times, seq_len)}
    finally:
        torch.set_num_threads(old_threads)
    time_ratio = results["pruned"]["latency_ms_median"] / results["dense"]["latency_ms_median"]
    flop_ratio = results["pruned"]["flops_per_token"] / results["dense"]["flops_per_token"]
    paired = statistics.median(p / d for p, d in zip(pruned_times, dense_times))
    results.update(time_ratio=time_ratio, time_ratio_paired=paired, flop_ratio=flop_ratio, speedup=1 / time_ratio,
                   warning=gain_warning(time_ratio, flop_ratio, batch_size, seq_len),
                   batch_size=batch_size, seq_len=seq_len, repeats=repeats,
                   threads=int(threads) if threads is not None else old_threads, device=str(device))
    return results


def gain_warning(time_ratio: float, flop_ratio: float, batch_size: int, seq_len: int) -> str | None:
    """A sentence when the measured time saving is far below the FLOP saving."""
    flop_gain, time_gain = 1 - flop_ratio, 1 - time_ratio
    if flop_gain < 0.05 or time_gain >= 0.5 * flop_gain:
        return None
    measured = f"{time_gain:.0%} faster" if time_gain > 0 else f"not faster (time ratio {time_ratio:.2f})"
    return (f"The pruned model is {measured} although it needs {flop_gain:.0%} fewer FLOPs: with "
            f"{batch_size}×{seq_len} tokens per pass the run is likely overhead-bound (kernel launches, Python) "
            "or memory-bound, so smaller matrices save less than their FLOPs; larger batches or longer inputs "
            "show more of the gain.")
