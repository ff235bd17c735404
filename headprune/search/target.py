"""Target masks: the fewest heads removed in score order that reach an analytic FLOPs ratio or a measured
latency (after Kwon et al. 2022's budgeted search)."""
from __future__ import annotations

import torch

from ..core.errors import UserError
from ..core.progress import Progress, report
from ..core.types import UnitMode
from ..evaluation.cost import flops_per_token
from ..evaluation.latency import measure
from ..model.layout import head_grid
from .masks import least_important


def target_mask(model, scores: torch.Tensor, *, flops_ratio: float | None = None, latency_ms: float | None = None,
                min_heads_per_layer: int = 1, unit_mode: UnitMode = "head", seq_len: int = 128, batch_size: int = 8,
                repeats: int = 5, threads: int | None = None, progress: Progress | None = None) -> tuple[torch.Tensor, dict]:
    """Fewest heads removed in score order so that the pruned model reaches a target.

    flops_ratio: analytic FLOPs per token (pruned / dense, `headprune.evaluation.cost.flops_per_token` at `seq_len`)
    <= the ratio; a linear scan over n, exact and cheap. latency_ms: measured median latency of the
    physically pruned model (`headprune.evaluation.latency.measure`, batch_size × seq_len, `repeats` runs) <= the target;
    a coarse binary search over n (about log2(L·H) measurements, each noisy: treat the result as approximate).
    Raises ValueError when no mask reaches the target. info: heads_removed, flops_ratio, latency_ms (if timed).
    """
    if (flops_ratio is None) == (latency_ms is None):
        raise UserError("give exactly one target: flops_ratio or latency_ms")
    grid = head_grid(model)
    total = grid[0] * grid[1]
    dense_flops = flops_per_token(model, None, seq_len)

    def mask_for(n):
        return least_important(scores, n, model=model, min_heads_per_layer=min_heads_per_layer, unit_mode=unit_mode)

    if flops_ratio is not None:
        for n in range(total + 1):
            keep = mask_for(n)
            ratio = flops_per_token(model, keep, seq_len) / dense_flops
            if ratio <= flops_ratio:
                return keep, {"heads_removed": total - int(keep.sum()), "flops_ratio": ratio}
        raise UserError(f"no mask reaches {flops_ratio:.2f}× the FLOPs with these guardrails (heads are only part "
                         "of the FLOPs); choose a larger ratio")
    low, high, found = 0, total, None
    while low <= high:
        mid = (low + high) // 2
        keep = mask_for(mid)
        result = measure(model, keep, batch_size=batch_size, seq_len=seq_len, repeats=repeats, warmup=1, threads=threads)
        latency = result["pruned"]["latency_ms_median"]
        if latency <= latency_ms:
            found, high = (keep, latency, result["flop_ratio"]), mid - 1
        else:
            low = mid + 1
        report(progress, (total - (high - low)) / total, f"{mid} heads removed: {latency:.1f} ms")
    if found is None:
        raise UserError(f"no mask reaches {latency_ms} ms at batch {batch_size} × {seq_len} tokens; "
                         "choose a larger target")
    keep, latency, ratio = found
    return keep, {"heads_removed": total - int(keep.sum()), "latency_ms": latency, "flops_ratio": ratio}
