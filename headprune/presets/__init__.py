"""presets: the built-in offline models (`minilm-tweets`, `smollm2-135m`) and `load_model`, which builds a preset
on first use and loads anything else through `headprune.sources`.

May import: core, model, sources, evaluation, recovery (building MiniLM fine-tunes and evaluates it).
"""
from __future__ import annotations

from ..core.errors import UserError
from ..core.progress import Progress
from ..sources import models as _models
from .build import build_preset, load_preset
from .registry import INSTALL, PRESETS, preset_dir, preset_meta

__all__ = ["INSTALL", "PRESETS", "build_preset", "load_model", "load_preset", "preset_dir", "preset_meta"]


def load_model(spec: str, *, trust_remote_code: bool = False, progress: Progress | None = None) -> _models.LoadedModel:
    """Load a preset name (see `PRESETS`; built on first use), a local model folder, a .gguf file or a Hub id."""
    spec = str(spec).strip()
    if spec in PRESETS:
        return load_preset(spec, progress=progress)
    try:
        return _models.load_model(spec, trust_remote_code=trust_remote_code)
    except UserError as exc:
        if "/" in spec or "\\" in spec or "not available offline" not in str(exc):
            raise
        raise UserError(f"{exc} — or choose a built-in preset: {', '.join(PRESETS)}", option=exc.option) from None
