"""Latency where the model runs: dense vs pruned in ONNX Runtime, and beside PyTorch at the same settings.

ONNX Runtime timing mirrors `headprune.evaluation.latency.measure`: the same synthetic valid inputs (B = batch_size,
T = seq_len), `warmup` untimed rounds, then `repeats` timed rounds with dense and pruned run in turns (so
background load hits both alike), medians reported, a fixed intra-op thread count (`runtime.session`). The
pruned side is `prune(model, keep)` exported to ONNX; both graphs are exported into a temporary folder
(minutes for large models) unless given. Decoders are timed on full-sequence forward passes (no KV cache).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..core.errors import UserError
from ..core.progress import Progress
from ..evaluation.cost import flops_per_token, params_after
from ..evaluation.latency import gain_warning, measure, synthetic_batch
from ..model import layout
from . import runtime

RUNTIMES = ("torch", "onnxruntime")


@dataclass(frozen=True)
class LatencySettings:
    """How to time: B x T tokens per pass, untimed warm-up rounds, timed rounds, intra-op threads (None: torch's
    current thread count, so both runtimes get the same)."""

    batch_size: int = 8
    seq_len: int = 128
    repeats: int = 20
    warmup: int = 3
    threads: int | None = None

    def checked(self) -> LatencySettings:
        """These settings with `threads` filled in; `UserError` for impossible values."""
        for name in ("batch_size", "seq_len", "repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a whole number >= 1, got {value!r}", option=name)
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise UserError(f"warmup must be a whole number >= 0, got {self.warmup!r}", option="warmup")
        threads = torch.get_num_threads() if self.threads is None else self.threads
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise UserError(f"threads must be a whole number >= 1, got {threads!r}", option="threads")
        return LatencySettings(self.batch_size, self.seq_len, self.repeats, self.warmup, threads)


@dataclass(frozen=True)
class Side:
    """One model in one runtime: milliseconds per forward pass (median, 10th and 90th percentile), parameters,
    analytic FLOPs per token."""

    latency_ms_median: float
    latency_ms_p10: float
    latency_ms_p90: float
    params: int
    flops_per_token: int


@dataclass(frozen=True)
class RuntimeLatency:
    """Dense vs pruned in one runtime. time_ratio: pruned median / dense median; time_ratio_paired: median over
    rounds of pruned / dense in the same round; flop_ratio: analytic; warning: set when the measured saving is far
    below the FLOP saving (overhead- or memory-bound)."""

    runtime: str
    dense: Side
    pruned: Side
    time_ratio: float
    time_ratio_paired: float
    flop_ratio: float
    speedup: float
    warning: str | None
    settings: LatencySettings

    def to_dict(self) -> dict:
        return asdict(self)

    def flat(self) -> dict:
        """The layout of `headprune.evaluation.latency.measure`'s dict (dense/pruned sides, ratios, warning,
        settings at the top level), with `runtime` added, so one renderer shows either runtime."""
        s = self.settings
        return {"runtime": self.runtime, "dense": asdict(self.dense), "pruned": asdict(self.pruned),
                "time_ratio": self.time_ratio, "time_ratio_paired": self.time_ratio_paired,
                "flop_ratio": self.flop_ratio, "speedup": self.speedup, "warning": self.warning,
                "batch_size": s.batch_size, "seq_len": s.seq_len, "repeats": s.repeats, "warmup": s.warmup,
                "threads": s.threads}


def _side(times: list[float], params: int, flops: int) -> Side:
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else [times[0]] * 9
    return Side(statistics.median(times), q[0], q[-1], params, flops)


def _ort_warning(time_ratio: float, flop_ratio: float, settings: LatencySettings) -> str | None:
    """`evaluation.latency.gain_warning`'s rule, in ONNX Runtime's terms."""
    if gain_warning(time_ratio, flop_ratio, settings.batch_size, settings.seq_len) is None:
        return None
    time_gain, flop_gain = 1 - time_ratio, 1 - flop_ratio
    measured = f"{time_gain:.0%} faster" if time_gain > 0 else f"not faster (time ratio {time_ratio:.2f})"
    return (f"In ONNX Runtime the pruned graph is {measured} although it needs {flop_gain:.0%} fewer FLOPs: with "
            f"{settings.batch_size}×{settings.seq_len} tokens per pass the run is likely overhead-bound (per-operator "
            "dispatch, thread synchronisation) or memory-bound, so smaller matrices save less than their FLOPs; "
            "larger batches or longer inputs show more of the gain.")


def time_sessions(sessions: list, inputs: dict, settings: LatencySettings,
                  progress: Progress | None = None) -> list[list[float]]:
    """Milliseconds per run of each ONNX Runtime session, interleaved rounds; the first `warmup` rounds untimed."""
    times: list[list[float]] = [[] for _ in sessions]
    feed = {name: tensor.numpy() for name, tensor in inputs.items()}
    rounds = settings.warmup + settings.repeats
    for i in range(rounds):
        for k, sess in enumerate(sessions):
            start = time.perf_counter()
            sess.run(None, feed)
            if i >= settings.warmup:
                times[k].append((time.perf_counter() - start) * 1000)
        if progress is not None:
            progress((i + 1) / rounds, f"timing round {i + 1}/{rounds}")
    return times


def measure_onnx(model, keep, settings: LatencySettings | None = None, *, pruned_path: str | Path | None = None,
                 progress: Progress | None = None) -> RuntimeLatency:
    """Time `model` vs `prune(model, keep)` in ONNX Runtime (module docstring). pruned_path: an already exported
    graph of the pruned model (e.g. `export_onnx`'s file), used instead of exporting it again."""
    from .export import export_onnx

    settings = (settings or LatencySettings()).checked()
    keep = layout.to_keep_tensor(keep, model)
    say = progress or (lambda fraction, message: None)
    batch = synthetic_batch(model, settings.batch_size, settings.seq_len)
    with tempfile.TemporaryDirectory(prefix="headprune-ort-") as folder:
        say(0.0, "exporting the dense model to ONNX")
        dense_path = export_onnx(model, Path(folder) / "dense.onnx").path
        if pruned_path is None:
            say(0.3, "exporting the pruned model to ONNX")
            pruned_path = export_onnx(model, Path(folder) / "pruned.onnx", keep).path
        sessions = [runtime.session(p, threads=settings.threads) for p in (dense_path, pruned_path)]
        names = [i.name for i in sessions[0].get_inputs()]
        if [i.name for i in sessions[1].get_inputs()] != names:
            raise UserError(f"{pruned_path} takes other inputs than this model's export: it was not made from it")
        inputs = runtime.feed(batch, names)
        dense_times, pruned_times = time_sessions(sessions, inputs, settings,
                                                  lambda f, m: say(0.6 + 0.4 * f, m))
    dense = _side(dense_times, layout.parameter_count(model), flops_per_token(model, None, settings.seq_len))
    pruned = _side(pruned_times, params_after(model, keep), flops_per_token(model, keep, settings.seq_len))
    time_ratio = pruned.latency_ms_median / dense.latency_ms_median
    flop_ratio = pruned.flops_per_token / dense.flops_per_token
    paired = statistics.median(p / d for p, d in zip(pruned_times, dense_times))
    return RuntimeLatency("onnxruntime", dense, pruned, time_ratio, paired, flop_ratio, 1 / time_ratio,
                          _ort_warning(time_ratio, flop_ratio, settings), settings)


def _from_cost(result: dict, settings: LatencySettings) -> RuntimeLatency:
    """`headprune.evaluation.latency.measure`'s dict as a `RuntimeLatency`."""
    sides = [Side(r["latency_ms_median"], r["latency_ms_p10"], r["latency_ms_p90"], r["params"], r["flops_per_token"])
             for r in (result["dense"], result["pruned"])]
    return RuntimeLatency("torch", *sides, result["time_ratio"], result["time_ratio_paired"], result["flop_ratio"],
                          result["speedup"], result["warning"], settings)


def compare_runtimes(model, keep, settings: LatencySettings | None = None, *, runtimes=RUNTIMES,
                     progress: Progress | None = None) -> dict[str, RuntimeLatency]:
    """Dense vs pruned latency in each of `runtimes` ("torch": `headprune.evaluation.latency.measure`; "onnxruntime":
    `measure_onnx`) at the same batch size, sequence length and thread count; keyed by runtime."""
    settings = (settings or LatencySettings()).checked()
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise UserError(f"unknown runtime(s) {', '.join(map(str, unknown)) or '(none given)'}; choose from "
                        f"{', '.join(RUNTIMES)}", option="runtimes")
    say = progress or (lambda fraction, message: None)
    out: dict[str, RuntimeLatency] = {}
    for i, name in enumerate(runtimes):
        def part(fraction: float, message: str, i=i, name=name) -> None:
            say((i + fraction) / len(runtimes), f"{name}: {message}")

        if name == "torch":
            out[name] = _from_cost(measure(model, keep, batch_size=settings.batch_size, seq_len=settings.seq_len,
                                           repeats=settings.repeats, warmup=settings.warmup, threads=settings.threads,
                                           progress=part), settings)
        else:
            out[name] = measure_onnx(model, keep, settings, progress=part)
    return out
