"""ONNX export of a (pruned, optionally recovered) model, checked in ONNX Runtime, with a headprune sidecar.

Exporter: `torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript), torch's default and maintained
path; optimum-onnx 0.1.0 requires transformers < 4.58, and the TorchScript exporter is deprecated. The graph
takes token ids (B, T) — input_ids, attention_mask, and token_type_ids where the model has token types —
with dynamic batch and sequence axes, and returns `logits`: (B, num_labels) for classifiers, (B, T, vocab)
for language models. No KV cache: decoders run full-sequence forward passes (prefill), not step-by-step
generation. Every family and mask exports, uneven heads per layer and empty layers included.

Written atomically: the .onnx file (and its `.data` file, for models over 2 GB) and `<file>.headprune.json`
are made in a temporary folder beside the target, checked, and renamed into place, the .onnx file last; an
existing file is replaced only with `overwrite=True`. The sidecar (schema `headprune.onnx/1`) records the
model id, the kept heads, the opset, the exporter versions and the parity numbers; the same identification
(without parity) sits in the .onnx file's own metadata under `headprune`.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.errors import UserError
from ..core.files import temp_sibling
from ..core.outputs import ONNX, check_output
from ..core.progress import Progress
from ..evaluation.cost import flops_per_token
from ..evaluation.latency import check_seq_len, synthetic_batch
from ..model import adapters, layout
from ..model.intervene import private_copy
from ..model.layout import kept_mask
from ..model.surgery import prune
from . import runtime
from .runtime import Parity

SCHEMA = "headprune.onnx/1"
SIDECAR_SUFFIX = ".headprune.json"
EXPORTER = "torch.onnx.export(dynamo=True)"
_EXPORT_LOCK = threading.Lock()  # torch.export traces under process-wide state: one export at a time


def sidecar_path(path: str | Path) -> Path:
    """`<file>.headprune.json` beside an exported .onnx file."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


class _Logits(nn.Module):
    """What the graph computes: token tensors (B, T) in, logits out (no loss, no KV cache)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.extra = {"use_cache": False} if adapters.adapter_for(model).causal else {}

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs, **self.extra).logits


def _positions(model) -> int | None:
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def _program(model: nn.Module, names: list[str], opset: int | None):
    """The `torch.onnx.ONNXProgram` of `model` (a private copy: tracing swaps parameters for fake tensors)."""
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)  # "torchvision missing"
    positions = _positions(model)
    seq = min(8, positions) if positions else 8  # example (2, 8): both > 1 and unequal, so neither axis specialises
    example = runtime.feed(synthetic_batch(model, 2, seq), names)
    batch_dim = torch.export.Dim("batch")
    seq_dim = torch.export.Dim("sequence", max=positions) if positions else torch.export.Dim("sequence")
    dynamic = {name: {0: batch_dim, 1: seq_dim} for name in names}
    with _EXPORT_LOCK, torch.no_grad():
        return torch.onnx.export(_Logits(model).eval(), (), kwargs=example, dynamo=True, opset_version=opset,
                                 dynamic_shapes=dynamic, output_names=["logits"], verbose=False)


def _versions() -> dict:
    import onnx
    import onnxruntime
    import onnxscript
    import transformers

    return {"exporter": EXPORTER, "torch": torch.__version__, "transformers": transformers.__version__,
            "onnxscript": onnxscript.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


@dataclass(frozen=True)
class OnnxExport:
    """An exported .onnx file and what it holds. kept_heads: per layer, original ids of the heads in the graph.
    parity: ONNX Runtime vs PyTorch on the checked batches. latency: `measure_onnx(...).to_dict()` when asked.
    flop_ratio: the exported model's FLOPs per token over those of the model passed in (at `flop_seq_len`
    tokens)."""

    path: str
    sidecar: str
    model_id: str | None
    family: str
    task: str
    architecture: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict
    opset: int
    versions: dict
    num_layers: int
    num_heads: int
    kept_heads: tuple[tuple[int, ...], ...]
    heads_kept: int
    params: int
    flop_ratio: float
    flop_seq_len: int
    file_bytes: int
    seconds: float
    parity: Parity
    recovery: dict | None = None
    latency: dict | None = None
    meta: dict | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["kept_heads"] = [list(layer) for layer in self.kept_heads]
        out["parity"] = self.parity.to_dict()
        return {"schema": SCHEMA, **out}


def _check_target(path: Path, overwrite: bool) -> None:
    """An existing file is replaced only when it is an earlier headprune ONNX export and `overwrite` is set."""
    check_output(path, ONNX, overwrite=overwrite, option="out")


def _opset(program) -> int:
    return int(program.model.opset_imports.get("", 0))


def export_onnx(model, path: str | Path, keep=None, *, recovery=None, batches: list[dict] | None = None,
                model_id: str | None = None, opset: int | None = None, tolerance: float = 1e-4,
                latency=None, overwrite: bool = False, meta: dict | None = None,
                progress: Progress | None = None) -> OnnxExport:
    """Export `model` pruned by `keep` to ONNX at `path`, check it in ONNX Runtime, write the sidecar.

    keep: (L, H) bool mask (None: `model` as it is, perhaps already pruned); recovery: a
    `headprune.recovery.lsq.Recovery` of this mask, written in before pruning. batches: real examples (dicts of
    (B, T) tensors, e.g. from `make_batches`) for the parity check; None: one synthetic batch of 4 x 16 tokens.
    opset: None = the exporter's default. latency: a `LatencySettings` to also time ONNX Runtime dense vs this
    graph (`measure_onnx`). `model` itself is never modified. Raises `OutputExistsError` if `path` exists and
    not `overwrite`. A parity failure does not raise: `result.parity.ok` says so (the file is still written).
    """
    from .latency import measure_onnx

    start = time.perf_counter()
    say = progress or (lambda fraction, message: None)
    path = Path(path).expanduser()
    _check_target(path, overwrite)
    if latency is not None:  # impossible settings fail here, not after the export
        latency = latency.checked()
        check_seq_len(model, latency.seq_len)
    if recovery is not None:
        keep = recovery.keep if keep is None else layout.to_keep_tensor(keep, model)
        if not torch.equal(recovery.keep, keep):
            raise UserError("the recovery was made for another mask: recover this mask again, or export without it",
                            option="recovery")
    say(0.0, "pruning a copy")
    source = model if recovery is None else recovery.bake(model)
    exported = prune(source, keep) if keep is not None else private_copy(model)
    exported.to("cpu").eval()  # a private copy: the graph is traced and checked on the CPU
    names = runtime.graph_input_names(exported)
    say(0.1, "exporting to ONNX (torch.export, then onnxscript)")
    program = _program(exported, names, opset)
    kept = tuple(tuple(row.nonzero().flatten().tolist()) for row in kept_mask(exported))
    model_id = model_id or getattr(model.config, "_name_or_path", None) or None
    identity = {"schema": SCHEMA, "model_id": model_id, "family": adapters.family_of(exported),
                "task": layout.task_of(exported), "kept_heads": [list(k) for k in kept]}
    program.model.metadata_props["headprune"] = json.dumps(identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = temp_sibling(path)  # named so that a later write cleans it up if this process is killed
    work.mkdir()
    try:
        staged = work / path.name
        program.save(str(staged))
        say(0.6, "checking parity in ONNX Runtime")
        source_name = "given batches" if batches else "synthetic"
        check = batches or [synthetic_batch(exported, 4, min(16, _positions(exported) or 16), seed=1)]
        parity = runtime.check_parity(exported, runtime.session(staged), list(check), tolerance=tolerance,
                                      source=source_name)
        timed = None
        if latency is not None:
            say(0.7, "timing ONNX Runtime: dense vs pruned")
            timed = measure_onnx(model, kept_mask(exported), latency, pruned_path=staged).to_dict()
        seq = latency.seq_len if latency is not None else 128
        result = OnnxExport(
            path=str(path), sidecar=str(sidecar_path(path)), model_id=model_id, family=identity["family"],
            task=identity["task"], architecture=type(exported).__name__, inputs=tuple(names), outputs=("logits",),
            dynamic_axes={**{n: ["batch", "sequence"] for n in names},
                          "logits": ["batch"] if identity["task"] == "classification" else ["batch", "sequence"]},
            opset=_opset(program), versions=_versions(), num_layers=layout.num_layers(model),
            num_heads=layout.num_heads(model), kept_heads=kept, heads_kept=sum(map(len, kept)),
            params=layout.parameter_count(exported),
            flop_ratio=flops_per_token(exported, None, seq) / flops_per_token(model, None, seq), flop_seq_len=seq,
            file_bytes=sum(f.stat().st_size for f in work.iterdir()), seconds=time.perf_counter() - start,
            parity=parity, recovery=None if recovery is None else recovery.summary(),
            latency=timed, meta=meta)
        (work / sidecar_path(path).name).write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        _check_target(path, overwrite)  # again: something may have appeared there meanwhile
        for item in sorted(work.iterdir(), key=lambda f: f.name == path.name):  # the .onnx file last
            os.replace(item, path.parent / item.name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(1.0, f"wrote {path}")
    return result


def read_sidecar(path: str | Path) -> dict:
    """The headprune record of an exported .onnx file (`path` or its sidecar); `UserError` if there is none."""
    path = Path(path)
    side = path if path.name.endswith(SIDECAR_SUFFIX) else sidecar_path(path)
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} has no {SIDECAR_SUFFIX} beside it: not an ONNX file exported by headprune") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{side} is not valid JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise UserError(f"{side} is not a headprune ONNX record (schema {SCHEMA!r} expected)")
    return record
