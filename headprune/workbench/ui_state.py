"""The dashboard's state, without Streamlit: mask links, grid toggles, undo, and the app's start-up settings.

* `encode_mask` / `decode_mask`: a keep-mask (L, H) <-> a short URL-safe text, so a link reproduces a mask;
* `MaskHistory`: an undo stack of masks;
* `app_settings`: the starting model / data / live-set size from the command line or the environment.
"""
from __future__ import annotations

import argparse
import os
from typing import Mapping, Sequence

import torch

from ..core.errors import UserError

DEFAULT_LIVE_EXAMPLES = 256  # a toggle answers in about a second on 2 CPU cores for MiniLM (6x12, 128 tokens);
# slower models get fewer (Workbench.live_size), unless a size is given

_HEX = "0123456789abcdef"


# ------------------------------------------------------------------------------------------ mask <-> URL
def encode_mask(keep) -> str:
    """A keep mask (L, H), True = kept, as URL-safe text "LxH-<hex>": the row-major bits, 4 heads a hex digit.

    6x12 all kept -> "6x12-fff...f" (18 hex digits); SmolLM2's 30x9 needs 68.
    """
    keep = torch.as_tensor(keep).bool()
    if keep.dim() != 2:
        raise UserError(f"keep mask must be 2-D (num_layers, num_heads), got shape {tuple(keep.shape)}")
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
        raise UserError(f"not a headprune mask link: {text[:40]!r} (expected LxH-<hex digits>)") from None
    if layers < 1 or heads < 1 or len(values) != -(-layers * heads // 4):
        raise UserError(f"mask link {text[:40]!r} is damaged: {len(values)} hex digits do not fit {layers}x{heads} heads")
    if shape is not None and (layers, heads) != tuple(shape):
        raise UserError(f"the mask in the link is for {layers} layers x {heads} heads; "
                         f"the loaded model has {shape[0]} x {shape[1]}")
    bits = [bool(v >> (3 - i) & 1) for v in values for i in range(4)]
    return torch.tensor(bits[: layers * heads], dtype=torch.bool).view(layers, heads)


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
        """The last remembered mask, removed from the stack; UserError when there is nothing to undo."""
        if not self._past:
            raise UserError("nothing to undo")
        return self._past.pop()

    def last(self) -> torch.Tensor | None:
        """The mask `undo` would return (a copy), or None; the stack is left as it is."""
        return self._past[-1].clone() if self._past else None

    def __len__(self) -> int:
        return len(self._past)


# ----------------------------------------------------------------------------------------- app settings
def app_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> dict:
    """Starting model, data and live-set size: `streamlit run app.py -- --model M --data D --live-examples N`,
    else env HEADPRUNE_MODEL / HEADPRUNE_DATA / HEADPRUNE_LIVE_EXAMPLES, else minilm-tweets on the tweets
    (`auto_live`: no size was given, so the dashboard may shrink the default set until a toggle takes ~2 s); and
    served mode (`--served` / `--local`, `--data-root`, `--models-root`, `--exports-root`; None: from the
    environment and the server address, see `headprune.core.roots.PathPolicy.from_env`)."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="app.py", add_help=False)
    parser.add_argument("--model", default=environ.get("HEADPRUNE_MODEL") or "minilm-tweets")
    parser.add_argument("--data", default=environ.get("HEADPRUNE_DATA") or "tweets")
    parser.add_argument("--live-examples", type=int, default=None)
    parser.add_argument("--served", dest="served", action="store_const", const=True, default=None)
    parser.add_argument("--local", dest="served", action="store_const", const=False)
    for root in ("data", "models", "exports"):
        parser.add_argument(f"--{root}-root", default=None)
    args, _ = parser.parse_known_args(list(argv or []))
    live = args.live_examples
    if live is None:
        text = environ.get("HEADPRUNE_LIVE_EXAMPLES", "")
        try:
            live = int(text) if text else None
        except ValueError:
            raise UserError(f"HEADPRUNE_LIVE_EXAMPLES must be a whole number, got {text!r}") from None
    if live is not None and live < 1:
        raise UserError(f"the live evaluation set needs at least 1 example, got {live}")
    return {"model": args.model, "data": args.data, "live_examples": live or DEFAULT_LIVE_EXAMPLES,
            "auto_live": live is None, "served": args.served,
            "roots": {"data_root": args.data_root, "models_root": args.models_root, "exports_root": args.exports_root}}
