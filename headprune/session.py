"""UI-free helpers the dashboard needs that are not figures: mask links, grid toggles, undo, background jobs.

Nothing here imports Streamlit, so all of it is tested directly:
* `encode_mask` / `decode_mask`: a keep-mask (L, H) <-> a short URL-safe text, so a link reproduces a mask;
* `toggle_selection`: what a click (one head) or a box selection (a block of heads) does to a mask;
* `MaskHistory`: an undo stack of masks;
* `Job`: one long computation (scoring, curves, recovery fine-tune) in a background thread, with a
  lock-protected state (status, fraction, message, result, error) that a polling UI renders, and cancel;
* `app_settings`: the starting model / data / live-set size from the command line or the environment;
* `Workload` / `load_workload`: the model, the live evaluation set and its dense metrics, built once.
"""
from __future__ import annotations

import argparse
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

Progress = Callable[[float, str], None]
DEFAULT_LIVE_EXAMPLES = 256  # a toggle answers in about a second on 2 CPU cores for MiniLM (6x12, 128 tokens)
_HEX = "0123456789abcdef"


# ------------------------------------------------------------------------------------------ mask <-> URL
def encode_mask(keep) -> str:
    """A keep mask (L, H), True = kept, as URL-safe text "LxH-<hex>": the row-major bits, 4 heads a hex digit.

    6x12 all kept -> "6x12-fff...f" (18 hex digits); SmolLM2's 30x9 needs 68.
    """
    keep = torch.as_tensor(keep).bool()
    if keep.dim() != 2:
        raise ValueError(f"keep mask must be 2-D (num_layers, num_heads), got shape {tuple(keep.shape)}")
    bits = keep.flatten().tolist()
    bits += [False] * (-len(bits) % 4)
    digits = "".join(_HEX[8 * a + 4 * b + 2 * c + d] for a, b, c, d in zip(*[iter(bits)] * 4))
    return f"{keep.shape[0]}x{keep.shape[1]}-{digits}"


def decode_mask(text: str, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Parse `encode_mask` text back into a bool tensor (L, H); `shape` checks it fits the loaded model."""
    text = str(text).strip().lower()
    try:
        dims, digits = text.split("-", 1)
        layers, heads = (int(n) for n in dims.split("x"))
        values = [_HEX.index(ch) for ch in digits]
    except ValueError:
        raise ValueError(f"not a headprune mask link: {text[:40]!r} (expected LxH-<hex digits>)") from None
    if layers < 1 or heads < 1 or len(values) != -(-layers * heads // 4):
        raise ValueError(f"mask link {text[:40]!r} is damaged: {len(values)} hex digits do not fit {layers}x{heads} heads")
    if shape is not None and (layers, heads) != tuple(shape):
        raise ValueError(f"the mask in the link is for {layers} layers x {heads} heads; "
                         f"the loaded model has {shape[0]} x {shape[1]}")
    bits = [bool(v >> (3 - i) & 1) for v in values for i in range(4)]
    return torch.tensor(bits[: layers * heads], dtype=torch.bool).view(layers, heads)


# --------------------------------------------------------------------------------------- grid selections
def selected_heads(points: Iterable[Mapping[str, Any]]) -> list[tuple[int, int]]:
    """(layer, head) of every selected grid point (Plotly selection points carrying customdata=[layer, head])."""
    heads = []
    for point in points:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) >= 2:
            heads.append((int(data[0]), int(data[1])))
    return list(dict.fromkeys(heads))


def toggle_selection(keep: torch.Tensor, points: Iterable[Mapping[str, Any]]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Apply a grid selection to `keep` (L, H); returns (new mask, heads whose state changed).

    One head: flip it. Several (box select): a block acts as one switch — if any of them is kept, remove
    them all; if all are already removed, restore them all. An empty selection (a click on blank space, or
    the deselection Plotly reports after a redraw) changes nothing. `keep` itself is never modified.
    """
    heads = [(l, h) for l, h in selected_heads(points) if 0 <= l < keep.shape[0] and 0 <= h < keep.shape[1]]
    new = keep.clone()
    if not heads:
        return new, []
    if len(heads) == 1:
        target = [not bool(keep[heads[0]])]
    else:
        target = [not any(bool(keep[lh]) for lh in heads)] * len(heads)
    changed = []
    for (layer, head), value in zip(heads, target):
        if bool(new[layer, head]) != value:
            new[layer, head] = value
            changed.append((layer, head))
    return new, changed


# ------------------------------------------------------------------------------------------------- undo
class MaskHistory:
    """Undo stack of keep masks (at most `limit`, oldest dropped); stores copies, never the caller's tensor."""

    def __init__(self, limit: int = 50):
        self.limit = limit
        self._past: list[torch.Tensor] = []

    def push(self, keep: torch.Tensor) -> None:
        """Remember `keep` (the mask *before* a change); an identical repeat of the last entry is skipped."""
        keep = torch.as_tensor(keep).bool().clone()
        if self._past and torch.equal(self._past[-1], keep):
            return
        self._past.append(keep)
        del self._past[: max(0, len(self._past) - self.limit)]

    def undo(self) -> torch.Tensor:
        """The last remembered mask, removed from the stack; ValueError when there is nothing to undo."""
        if not self._past:
            raise ValueError("nothing to undo")
        return self._past.pop()

    def __len__(self) -> int:
        return len(self._past)


# ---------------------------------------------------------------------------------------- background jobs
class JobCancelled(Exception):
    """Raised inside a job's `progress` callback after `Job.cancel()`, to stop engines that only report progress."""


class Job:
    """Runs `fn(progress=..., should_stop=...)` in a daemon thread; its state is read with `snapshot()`.

    States: "idle" → "running" → "done" | "failed" | "cancelled". `progress(fraction, message)` records
    progress (and raises `JobCancelled` once cancelled); `should_stop()` lets a loop stop cleanly and return a
    partial result. Every state change happens under one lock, so a polling UI thread sees a consistent state.
    """

    def __init__(self, name: str = "job"):
        self.name = name
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = dict(status="idle", fraction=0.0, message="", result=None, error=None,
                                           started=None, finished=None)

    def start(self, fn: Callable[..., Any], *, pass_should_stop: bool = True) -> None:
        """Start `fn` in the background; ValueError if this job is already running."""
        with self._lock:
            if self._state["status"] == "running":
                raise ValueError(f"{self.name} is already running; wait for it or cancel it")
            self._cancel.clear()
            self._state.update(status="running", fraction=0.0, message="starting", result=None, error=None,
                               started=time.monotonic(), finished=None)
        kwargs = {"progress": self.progress}
        if pass_should_stop:
            kwargs["should_stop"] = self.should_stop
        self._thread = threading.Thread(target=self._run, args=(fn, kwargs), name=f"headprune-{self.name}", daemon=True)
        self._thread.start()

    def _run(self, fn, kwargs) -> None:
        try:
            result = fn(**kwargs)
        except JobCancelled:
            self._finish(status="cancelled", message="cancelled")
        except Exception as exc:  # shown to the user as the job's error; the UI stays usable
            self._finish(status="failed", error=" ".join(f"{type(exc).__name__}: {exc}".split())[:500])
        else:
            status = "cancelled" if self._cancel.is_set() else "done"
            self._finish(status=status, result=result, fraction=1.0 if status == "done" else None)

    def _finish(self, *, status: str, result: Any = None, error: str | None = None, fraction: float | None = None,
                message: str | None = None) -> None:
        with self._lock:
            self._state.update(status=status, result=result, error=error, finished=time.monotonic())
            if fraction is not None:
                self._state["fraction"] = fraction
            if message is not None:
                self._state["message"] = message

    def progress(self, fraction: float, message: str = "") -> None:
        """Record progress in [0, 1]; raises `JobCancelled` after `cancel()`."""
        with self._lock:
            self._state["fraction"] = min(1.0, max(0.0, float(fraction)))
            self._state["message"] = str(message)
        if self._cancel.is_set():
            raise JobCancelled()

    def should_stop(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the job to stop (at its next progress report or should_stop check)."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> dict:
        """Block until the job's thread ends (tests, CLI); returns the final snapshot."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.snapshot()

    def snapshot(self) -> dict:
        """A copy of the state plus `elapsed` seconds and an `eta` text; safe from any thread."""
        with self._lock:
            state = dict(self._state)
        if state["started"] is not None:
            end = state["finished"] if state["finished"] is not None else time.monotonic()
            state["elapsed"] = end - state["started"]
        else:
            state["elapsed"] = 0.0
        state["eta"] = eta_text(state["fraction"], state["elapsed"]) if state["status"] == "running" else ""
        state["cancelling"] = self._cancel.is_set() and state["status"] == "running"
        return state


def eta_text(fraction: float, elapsed: float) -> str:
    """An honest remaining-time text from progress so far: '' until 2% and 2 s give a basis for it."""
    if fraction < 0.02 or elapsed < 2.0 or fraction >= 1.0:
        return ""
    remaining = elapsed * (1.0 - fraction) / fraction
    return f"about {format_seconds(remaining)} left ({format_seconds(elapsed)} so far)"


def format_seconds(seconds: float) -> str:
    """12 -> '12 s', 95 -> '1 min 35 s', 3700 -> '1 h 2 min'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


# ----------------------------------------------------------------------------------------- app settings
def app_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> dict:
    """Starting model, data and live-set size: `streamlit run app.py -- --model M --data D --live-examples N`,
    else env HEADPRUNE_MODEL / HEADPRUNE_DATA / HEADPRUNE_LIVE_EXAMPLES, else minilm-tweets on the tweets."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="app.py", add_help=False)
    parser.add_argument("--model", default=environ.get("HEADPRUNE_MODEL") or "minilm-tweets")
    parser.add_argument("--data", default=environ.get("HEADPRUNE_DATA") or "tweets")
    parser.add_argument("--live-examples", type=int, default=None)
    args, _ = parser.parse_known_args(list(argv or []))
    live = args.live_examples
    if live is None:
        text = environ.get("HEADPRUNE_LIVE_EXAMPLES", "")
        try:
            live = int(text) if text else DEFAULT_LIVE_EXAMPLES
        except ValueError:
            raise ValueError(f"HEADPRUNE_LIVE_EXAMPLES must be a whole number, got {text!r}") from None
    if live < 1:
        raise ValueError(f"the live evaluation set needs at least 1 example, got {live}")
    return {"model": args.model, "data": args.data, "live_examples": live}


# ---------------------------------------------------------------------------------------------- workload
@dataclass
class Workload:
    """What every page works on: the shared model (never mutated), the live evaluation set, its dense metrics."""

    loaded: Any  # headprune.models.LoadedModel
    data_spec: str
    df: Any  # pandas DataFrame of the live set
    batches: list
    dense: dict
    data_fingerprint: str
    settings: dict = field(default_factory=dict)

    @property
    def model(self):
        return self.loaded.model

    @property
    def shape(self) -> tuple[int, int]:
        from .arch import head_grid

        return head_grid(self.model)

    @property
    def key(self) -> str:
        """Identifies model + data + live-set size (caches of scores and curves are keyed on it)."""
        return f"{self.loaded.model_id}|{self.data_fingerprint}|{len(self.df)}"


def load_workload(model_spec: str, data_spec: str, *, live_examples: int = DEFAULT_LIVE_EXAMPLES, split: str = "validation",
                  max_length: int = 128, seed: int = 0, data_options: Mapping[str, Any] | None = None,
                  progress: Progress | None = None) -> Workload:
    """Load the model and a seeded sample of `live_examples` rows of the data, batch it, evaluate the dense model.

    `data_options`: extra `headprune.data.load_data` arguments (column names, config name).
    """
    from .batches import make_batches
    from .data import data_fingerprint, load_data
    from .evaluate import evaluate
    from .models import load_model

    loaded = load_model(model_spec, progress=progress)
    df = load_data(data_spec, split=split, limit=live_examples, seed=seed,
                   label2id=loaded.label2id if loaded.task == "classification" else None, **dict(data_options or {}))
    batch_size = 64 if loaded.task == "classification" else 8
    batches = make_batches(loaded.tokenizer, df, loaded.task, batch_size=batch_size, max_length=max_length, seed=seed)
    if progress is not None:
        progress(0.95, f"evaluating the dense model on {len(df)} examples")
    dense = evaluate(loaded.model, batches, task=loaded.task)
    return Workload(loaded=loaded, data_spec=str(data_spec), df=df, batches=batches, dense=dense,
                    data_fingerprint=data_fingerprint(df),
                    settings={"live_examples": live_examples, "split": split, "max_length": max_length, "seed": seed,
                              "batch_size": batch_size, **dict(data_options or {})})


# ------------------------------------------------------------------------------------------ export
def library_versions(extra: Mapping[str, str] | None = None) -> dict:
    """Versions that decide whether a result reproduces: python, torch, transformers, headprune (+ extra)."""
    import platform

    import transformers

    from . import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "headprune": __version__, **dict(extra or {})}


def reproducibility_record(workload: Workload, keep, *, after: Mapping[str, Any], scores: Mapping[str, Any] | None = None,
                           latency: Mapping[str, Any] | None = None, versions: Mapping[str, str] | None = None) -> dict:
    """Everything needed to reproduce a mask's numbers, for the mask JSON's `meta`.

    after: metrics of the masked model on the live set (`evaluate` keys). scores: how the mask was scored
    (metric, options), if it was. latency: a `headprune.cost.measure` result for this mask, if measured.
    """
    from .score_cache import model_fingerprint

    keys = [k for k in ("accuracy", "macro_f1", "next_token_accuracy", "perplexity", "loss", "n") if k in workload.dense]
    record = {
        "model": {"id": workload.loaded.model_id, "fingerprint": model_fingerprint(workload.model),
                  "family": workload.loaded.meta.get("family"), "task": workload.loaded.task,
                  "grid": list(workload.shape)},
        "data": {"spec": workload.data_spec, "fingerprint": workload.data_fingerprint, "examples": len(workload.df),
                 **{k: v for k, v in workload.settings.items() if k != "live_examples"}},
        "seeds": {"data_sample": workload.settings.get("seed", 0), "torch": torch.initial_seed()},
        "scores": dict(scores or {}),
        "before": {k: workload.dense[k] for k in keys},
        "after": {k: after[k] for k in keys if k in after},
        "heads_kept": int(torch.as_tensor(keep).sum()),
        "versions": library_versions(versions),
    }
    if latency:
        record["latency"] = {side: {k: latency[side][k] for k in ("latency_ms_median", "latency_ms_p10", "latency_ms_p90")}
                             for side in ("dense", "pruned")}
        record["latency"].update({k: latency.get(k) for k in ("speedup", "batch_size", "seq_len", "repeats", "threads")})
    return record


def export_pruned(workload: Workload, keep, folder, *, meta: Mapping[str, Any] | None = None,
                  recovery=None) -> dict:
    """Physically prune (after writing in `recovery`, a `headprune.recover.Recovery` of this mask, if given),
    save to `folder` (`headprune.prune.save_pruned`), reload it and compare its logits with the masked (or
    recovered) shared model on the first live batch. Returns path, max_abs_diff, params before/after, seconds."""
    from pathlib import Path

    from .arch import parameter_count
    from .mask import masked
    from .models import load_model
    from .prefix import forward_logits
    from .prune import prune, save_pruned

    start = time.perf_counter()
    keep = torch.as_tensor(keep).bool()
    model = workload.model
    if recovery is not None and not torch.equal(recovery.keep, keep):
        raise ValueError("the recovery was made for another mask: recover this mask again, or export without it")
    pruned = prune(model if recovery is None else recovery.bake(model), keep)
    path = save_pruned(pruned, Path(folder).expanduser(), workload.loaded.tokenizer, meta=dict(meta or {}))
    reloaded = load_model(str(path)).model
    batch = workload.batches[0]
    with torch.inference_mode():
        with masked(model, keep) if recovery is None else recovery.applied(model):
            expected = forward_logits(model, batch)
        got = forward_logits(reloaded, batch)
    diff = float((expected - got).abs().max())
    return {"path": str(path), "max_abs_diff": diff, "matches": diff < 1e-3, "recovered": recovery is not None,
            "params_before": parameter_count(model), "params_after": parameter_count(reloaded),
            "seconds": time.perf_counter() - start}


def training_batches(workload: Workload, limit: int = 2000) -> list:
    """Batches of the training split of the workload's data (for the recovery fine-tune), `limit` examples."""
    from .batches import make_batches
    from .data import load_data

    loaded = workload.loaded
    options = {k: workload.settings[k] for k in ("text_column", "text_pair_column", "label_column", "config_name")
               if k in workload.settings}
    df = load_data(workload.data_spec, split="train", limit=limit, seed=workload.settings.get("seed", 0),
                   label2id=loaded.label2id if loaded.task == "classification" else None, **options)
    return make_batches(loaded.tokenizer, df, loaded.task, batch_size=16 if loaded.task == "classification" else 4,
                        max_length=workload.settings.get("max_length", 128), seed=workload.settings.get("seed", 0))
