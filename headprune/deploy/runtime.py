"""ONNX Runtime sessions for exported models, and parity with PyTorch on given batches.

Sessions run on the CPU execution provider with all graph optimisations. `threads` fixes the intra-op thread
count (inter-op 1, sequential execution) and turns thread spinning off, so that when two sessions are timed in
turns, the idle one's threads do not compete with the one being timed.
"""
from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.errors import UserError
from ..model import adapters, layout
from ..model.forward import real_tokens

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def graph_input_names(model) -> list[str]:
    """The inputs an exported `model` takes: input_ids and attention_mask, plus token_type_ids where the model
    has more than one token type (BERT, ELECTRA; not RoBERTa, DistilBERT or the decoders)."""
    params = inspect.signature(model.forward).parameters
    if "input_ids" not in params:
        raise UserError(f"{type(model).__name__} does not take token ids; ONNX export covers text models "
                        "(classifiers, masked and causal language models)")
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in params and int(getattr(model.config, "type_vocab_size", 0) or 0) > 1:
        names.append("token_type_ids")
    return names


def feed(batch: dict, names: list[str]) -> dict[str, torch.Tensor]:
    """The graph inputs `names` from a batch (labels and extras dropped; missing token types are zeros)."""
    ids = batch["input_ids"]
    inputs = {"input_ids": ids, "attention_mask": batch.get("attention_mask", torch.ones_like(ids))}
    if "token_type_ids" in names:
        inputs["token_type_ids"] = batch.get("token_type_ids", torch.zeros_like(ids))
    return {name: inputs[name].to("cpu", torch.long) for name in names}


def session(path: str | Path, *, threads: int | None = None):
    """An `onnxruntime.InferenceSession` on `path` (CPU; see the module docstring for `threads`)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("ONNX Runtime is not installed: install the onnxruntime package") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        if threads < 1:
            raise UserError(f"threads must be a positive number, got {threads}", option="threads")
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """The first output (logits) of `sess` on torch tensors."""
    return sess.run(None, {name: tensor.numpy() for name, tensor in inputs.items()})[0]


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime vs PyTorch logits on the same inputs.

    max_abs_diff / mean_abs_diff: over every compared logit (classifiers: every example; language models: every
    real token, padding left out). agreement: share of equal predictions (argmax) among `compared` ones.
    ok: max_abs_diff <= tolerance * max(1, max_abs_logit). source: "given batches" or "synthetic".
    """

    max_abs_diff: float
    mean_abs_diff: float
    max_abs_logit: float
    agreement: float
    compared: int
    examples: int
    batches: int
    tolerance: float
    ok: bool
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


def check_parity(model, sess, batches: list[dict], *, tolerance: float = 1e-4, source: str = "given batches") -> Parity:
    """Compare `sess` (an ONNX Runtime session of `model`'s export) with `model` in PyTorch on `batches`."""
    if not batches:
        raise UserError("no batches to compare ONNX Runtime with PyTorch on", option="batches")
    names = [i.name for i in sess.get_inputs()]
    token_level = layout.task_of(model) != "classification"
    extra = {"use_cache": False} if adapters.adapter_for(model).causal else {}
    diffs, agree, compared, examples, top = [], 0, 0, 0, 0.0
    with torch.inference_mode():
        for batch in batches:
            inputs = feed(batch, names)
            expected = model(**inputs, **extra).logits.float()  # (B, C) or (B, T, V)
            got = torch.from_numpy(run(sess, inputs)).float()
            if token_level:
                real = real_tokens(inputs)  # (B, T)
                expected, got = expected[real], got[real]  # (N, V)
            diffs.append((got - expected).abs().flatten())
            agree += int((got.argmax(-1) == expected.argmax(-1)).sum())
            compared += got.shape[0]
            examples += inputs["input_ids"].shape[0]
            top = max(top, float(expected.abs().max()) if expected.numel() else 0.0)
    diff = torch.cat(diffs)
    max_abs = float(diff.max()) if diff.numel() else 0.0
    return Parity(max_abs, float(diff.mean()) if diff.numel() else 0.0, top, agree / max(compared, 1), compared,
                  examples, len(batches), tolerance, max_abs <= tolerance * max(1.0, top), source)
