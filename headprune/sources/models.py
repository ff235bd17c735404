"""Loading models: local folders (save_pretrained / save_pruned), GGUF files and Hub ids.

`load_model(spec)` returns a `LoadedModel` in eval mode and fp32 (the built-in presets are resolved one stage
up, in `headprune.presets`). The task head is chosen from the config's `architectures` (sequence
classification, causal LM, masked LM). `trust_remote_code` is never turned on silently; unsupported
architectures are refused with the supported families named.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.errors import UserError
from ..core.types import Task
from ..model.adapters import family_of
from ..model.layout import task_of
from ..model.storage import PRUNED_FILE, load_pruned
from .files import HUB_NAME

_HEADS = {  # architecture name suffix → (Auto class name, task)
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForCausalLM": "AutoModelForCausalLM",
    "LMHeadModel": "AutoModelForCausalLM",
    "ForMaskedLM": "AutoModelForMaskedLM",
}


@dataclass
class LoadedModel:
    """A model ready for headprune: eval mode, fp32, with its tokenizer and what it is for."""

    model: torch.nn.Module
    tokenizer: object
    task: Task
    model_id: str
    label_names: list[str] | None
    source: str  # "preset" | "local" | "hub"
    meta: dict = field(default_factory=dict)

    @property
    def label2id(self) -> dict[str, int] | None:
        if self.label_names is None:
            return None
        return {name: i for i, name in enumerate(self.label_names)}


def load_model(spec: str, *, trust_remote_code: bool = False) -> LoadedModel:
    """Load a local model folder (save_pretrained or save_pruned), a .gguf file or a Hub id."""
    spec = str(spec).strip()
    if not spec:
        raise UserError("no model given: name a model folder or a Hub id", option="model")
    path = Path(os.path.expanduser(spec))
    if path.is_dir():
        if (path / PRUNED_FILE).is_file():
            return _load_pruned(path)
        if not (path / "config.json").is_file():
            raise UserError(f"{path} is not a model folder: it has no config.json (save a model there with "
                            "save_pretrained)", option="model")
        if "headprune_heads" in _read_config_json(str(path)):
            raise UserError(f"{path} holds a model pruned by headprune but its {PRUNED_FILE} is missing: restore "
                            "that file (it records which heads each layer keeps) or save the model again",
                            option="model")
        return load_pretrained(str(path), source="local", model_id=str(path.resolve()), trust_remote_code=trust_remote_code)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return load_gguf(path, source="local", model_id=str(path.resolve()))
        raise UserError(f"{path} is a file; name the folder that holds the model (config.json and weights) "
                        "or a .gguf file", option="model")
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or not HUB_NAME.match(spec):
        raise UserError(f"no such model folder: {spec}", option="model")
    return load_pretrained(spec, source="hub", model_id=spec, trust_remote_code=trust_remote_code)


def _head_class(config) -> str:
    """Name of the Auto class matching the config's task head."""
    architectures = list(getattr(config, "architectures", None) or [])
    for arch in architectures:
        for suffix, auto in _HEADS.items():
            if arch.endswith(suffix):
                return auto
    import transformers.models.auto.modeling_auto as auto_maps

    if not architectures:  # no record of the head: guess from what the model type supports
        for auto, mapping in (("AutoModelForCausalLM", auto_maps.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),):
            if config.model_type in mapping:
                return auto
    found = ", ".join(architectures) or "none recorded"
    raise UserError(
        f"this model has no task head headprune can evaluate (architectures: {found}); it needs a sequence "
        "classifier, a causal LM or a masked LM — fine-tune a head first, or use a built-in preset", option="model")


def _read_config_json(path: str) -> dict:
    try:
        return json.loads(Path(path, "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _offline_error(model_id: str, exc: BaseException) -> UserError:
    from huggingface_hub import constants

    detail = " ".join(str(exc).split())[:300]
    if isinstance(exc, OSError) and ("not a valid model identifier" in detail or "Repository Not Found" in detail) \
            and not constants.HF_HUB_OFFLINE:
        return UserError(f"no such model on the Hub: {model_id}", option="model")
    return UserError(
        f"not available offline: {model_id} is not a local folder or a model in the Hugging Face cache "
        "(download it once with network access, or use a folder saved with save_pretrained)", option="model")


def load_pretrained(path_or_id: str, *, source: str, model_id: str, trust_remote_code: bool = False,
                    **model_kwargs) -> LoadedModel:
    """Load a save_pretrained folder or Hub id with the Auto class of its head; fp32, eval mode."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    local = source != "hub"
    if local and "auto_map" in _read_config_json(path_or_id) and not trust_remote_code:
        raise UserError(
            f"{model_id} ships its own model code (auto_map in config.json); read it, and pass "
            "trust_remote_code if you trust it", option="trust_remote_code"
        )
    try:
        config = AutoConfig.from_pretrained(path_or_id, trust_remote_code=trust_remote_code)
    except OSError as exc:
        if local:
            raise UserError(f"could not read the model config in {path_or_id}: {' '.join(str(exc).split())[:200]}") from exc
        raise _offline_error(model_id, exc) from exc
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise UserError(f"{model_id} needs its own model code; allow remote code only if you trust it", option="trust_remote_code") from exc
        if "model type" in str(exc) or "Unrecognized" in str(exc):
            raise UserError(f"{model_id}: {' '.join(str(exc).split())[:200]} (is transformers up to date?)") from exc
        raise
    if getattr(config, "auto_map", None) and not trust_remote_code:
        raise UserError(f"{model_id} ships its own model code; allow remote code only if you trust it", option="trust_remote_code")
    auto_class = getattr(transformers, _head_class(config))
    kwargs = {"dtype": torch.float32, "trust_remote_code": trust_remote_code, **model_kwargs}
    if local and any(Path(path_or_id).glob("*.safetensors")):
        kwargs["use_safetensors"] = True
    try:
        model = auto_class.from_pretrained(path_or_id, config=config, **kwargs)
    except (OSError, RuntimeError) as exc:  # RuntimeError: weights of other shapes than the config says
        if local or isinstance(exc, RuntimeError):
            raise UserError(f"could not load the weights in {path_or_id}: {' '.join(str(exc).split())[:200]}") from exc
        raise _offline_error(model_id, exc) from exc
    try:
        tokenizer = AutoTokenizer.from_pretrained(path_or_id, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{model_id} has no usable tokenizer ({' '.join(str(exc).split())[:150]}); "
                         "save the tokenizer next to the model with tokenizer.save_pretrained") from exc
    return finish_loading(model, tokenizer, model_id=model_id, source=source)


def finish_loading(model, tokenizer, *, model_id: str, source: str, meta: dict | None = None) -> LoadedModel:
    """Check the family is supported, set eval/fp32, give pad-less tokenizers pad = eos, read label names
    (the model is new and not shared yet, so setting its mode here is safe)."""
    family = family_of(model)  # raises UnsupportedModelError naming the supported families
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        model = model.float()
    model.eval()
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    task = task_of(model)
    label_names = None
    if task == "classification":
        id2label = getattr(model.config, "id2label", None) or {}
        label_names = [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(model.config.num_labels)]
    meta = {"family": family, **(meta or {})}
    return LoadedModel(model=model, tokenizer=tokenizer, task=task, model_id=model_id,
                       label_names=label_names, source=source, meta=meta)


def load_gguf(path: Path, *, source: str, model_id: str | None = None, meta: dict | None = None) -> LoadedModel:
    """Load a GGUF file (dequantised to fp32) with its tokenizer; needs the `gguf` package."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except ImportError as exc:
        raise UserError(f"loading {path.name} needs the packages gguf and accelerate: {exc}") from exc
    if all(p.dtype == torch.float32 for p in model.parameters()):
        # The weights were dequantised to fp32 on load: drop the quantizer mark so that the model can be cast,
        # saved with save_pretrained, pruned and fine-tuned like any other.
        model.hf_quantizer = None
        model.is_quantized = False
        with contextlib.suppress(AttributeError):
            del model.config.quantization_config
    return finish_loading(model, tokenizer, model_id=model_id or str(path), source=source,
                          meta={"gguf_file": str(path), **(meta or {})})


def _load_pruned(folder: Path) -> LoadedModel:
    """A folder written by `headprune.model.storage.save_pruned`."""
    from transformers import AutoTokenizer

    model = load_pruned(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"the pruned model in {folder} has no tokenizer; save one there with "
                        "tokenizer.save_pretrained", option="model") from exc
    try:
        meta = json.loads((folder / PRUNED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    return finish_loading(model, tokenizer, model_id=str(folder.resolve()), source="local", meta={"pruned": meta})
