"""Seconds per head-importance metric, relative to one plain forward pass, and rank agreement between metrics.

    python bench/score_speed.py [--out FILE] [--model minilm-tweets] [--limit 512] [--threads 2]

On the `minilm-tweets` preset with 512 validation tweets: one plain forward pass (inference mode, the
same batches) is the unit. `gradient` and `fisher` are timed together (one shared backward pass, goal
<= 2.5x a forward pass); `ablation` is compared with the naive cost of (L*H + 1) full passes, computed
as (L*H + 1) x the measured forward pass (goal <= 0.6). Every metric runs with the disk cache off.
Prints a table and the Spearman matrix and writes JSON (default bench/results/score_speed.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from headprune.model.forward import forward_logits  # noqa: E402
from headprune.model.layout import head_grid  # noqa: E402
from headprune.presets import load_model  # noqa: E402
from headprune.scoring.agreement import compare_metrics  # noqa: E402
from headprune.scoring.api import score_many  # noqa: E402
from headprune.scoring.registry import METRICS  # noqa: E402
from headprune.sources.batches import make_batches  # noqa: E402
from headprune.sources.tweets import load_tweets  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "score_speed.json"


def forward_seconds(model, batches, repeats: int) -> float:
    """Best of `repeats` timings of one plain forward pass over all batches."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                forward_logits(model, batch)
        times.append(time.perf_counter() - start)
    return min(times)


def timed(model, batches, metrics: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    maps = score_many(model, batches, metrics, cache=False)
    return time.perf_counter() - start, maps


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--model", default="minilm-tweets")
    parser.add_argument("--limit", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="forward-pass timings (the best is kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    loaded = load_model(args.model)
    model = loaded.model.eval()
    df = load_tweets("validation", limit=args.limit)
    batches = make_batches(loaded.tokenizer, df, loaded.task, batch_size=args.batch_size)
    n_layers, n_heads = head_grid(model)
    forward_logits(model, batches[0])  # warm-up
    forward = forward_seconds(model, batches, args.repeats)

    seconds: dict[str, float] = {}
    maps: dict[str, torch.Tensor] = {}
    groups = [["gradient", "fisher"], ["ablation"], ["entropy", "confidence", "attention_mean"], ["norm"],
              ["magnitude"], ["random"]]
    for group in groups:
        took, out = timed(model, batches, group)
        seconds["+".join(group)] = took
        maps.update(out)
    for name in ("entropy", "confidence", "attention_mean"):  # each alone, for the per-metric table
        seconds[name] = timed(model, batches, [name])[0]
    seconds["gradient"] = timed(model, batches, ["gradient"])[0]
    naive_ablation = (n_layers * n_heads + 1) * forward

    rows = {name: {"seconds": s, "over_forward": s / forward} for name, s in seconds.items()}
    correlations = compare_metrics({name: maps[name] for name in METRICS})
    result = {
        "model": args.model,
        "examples": int(sum(b["input_ids"].shape[0] for b in batches)),
        "batches": len(batches),
        "batch_size": args.batch_size,
        "tokens_padded": int(sum(b["input_ids"].numel() for b in batches)),
        "head_grid": [n_layers, n_heads],
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "forward_seconds": forward,
        "metrics": rows,
        "gradient_fisher_over_forward": seconds["gradient+fisher"] / forward,
        "naive_ablation_seconds": naive_ablation,
        "naive_ablation_note": f"(L*H + 1) x one measured forward pass = {n_layers * n_heads + 1} x {forward:.3f} s",
        "ablation_over_naive": seconds["ablation"] / naive_ablation,
        "spearman": correlations["spearman"].round(4).where(correlations["spearman"].notna(), None).to_dict(),
        "kendall": correlations["kendall"].round(4).where(correlations["kendall"].notna(), None).to_dict(),
    }

    print(f"{args.model}: {result['examples']} examples in {len(batches)} batches, heads {n_layers}x{n_heads}, "
          f"{args.threads} threads; one forward pass = {forward:.3f} s")
    print(f"{'metric':<36}{'seconds':>10}{'x forward':>12}")
    for name, row in rows.items():
        print(f"{name:<36}{row['seconds']:>10.3f}{row['over_forward']:>12.2f}")
    print(f"gradient+fisher / forward = {result['gradient_fisher_over_forward']:.2f} (goal <= 2.5)")
    print(f"ablation / naive (L*H+1 passes = {naive_ablation:.2f} s) = {result['ablation_over_naive']:.3f} (goal <= 0.6)")
    print("\nSpearman rank correlation between metrics (NaN: constant map, e.g. attention_mean):")
    print(correlations["spearman"].round(2).to_string())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from headprune.core.files import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
