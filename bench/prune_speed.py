"""Dense vs physically pruned forward latency, parameters and analytic FLOPs (issue 3's benchmark).

Models: the MiniLM default (6×12: the built `minilm-tweets` preset, else raw all-MiniLM-L6-v2 with a fresh
3-label head) and a random BERT-base-sized classifier (12 layers × 12 heads, hidden 768, intermediate 3072).
Masks remove 25/50/75% of the heads, the same number in every layer, chosen at random (seed 0).
Timing: `headprune.evaluation.latency.measure` (batch 8 × 128 tokens, 3 warm-up + N timed passes, dense and pruned
interleaved, 2 threads). Goal: at 50% on BERT-base, time ratio <= FLOP ratio + 0.05.

    python bench/prune_speed.py [--out FILE] [--repeats 20] [--threads 2] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from _common import minilm_classifier  # noqa: E402
import transformers  # noqa: E402

from headprune.core.files import atomic_write_text  # noqa: E402
from headprune.evaluation.latency import measure  # noqa: E402
from headprune.model import layout  # noqa: E402

FRACTIONS = (0.25, 0.5, 0.75)


def minilm():
    model, _, source = minilm_classifier()
    return model, source


def bert_base():
    torch.manual_seed(0)
    config = transformers.BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                     intermediate_size=3072, num_labels=3)
    return transformers.BertForSequenceClassification(config).eval(), "random BERT-base-sized (12×12, d=768)"


def equal_per_layer(model, fraction: float, seed: int = 0) -> torch.Tensor:
    layers, heads = layout.head_grid(model)
    gen = torch.Generator().manual_seed(seed)
    keep = torch.ones(layers, heads, dtype=torch.bool)
    for layer in range(layers):
        keep[layer, torch.randperm(heads, generator=gen)[: round(fraction * heads)]] = False
    return keep


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "prune_speed.json"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--only", choices=["minilm", "bert_base"], help="time one model only")
    parser.add_argument("--device", default=None, help="e.g. cuda (default: the CPU)")
    args = parser.parse_args(argv)
    results = {"settings": {**vars(args), "torch": torch.__version__, "transformers": transformers.__version__}}
    print(f"{'model':<10} {'removed':>7} {'dense ms':>9} {'pruned ms':>9} {'p10-p90 pruned':>15} {'params':>12} "
          f"{'time ratio':>10} {'paired':>7} {'FLOP ratio':>10}")
    for name, build in (("minilm", minilm), ("bert_base", bert_base)):
        if args.only and name != args.only:
            continue
        model, source = build()
        results[f"{name}_source"] = source
        for fraction in FRACTIONS:
            r = measure(model, equal_per_layer(model, fraction), batch_size=args.batch_size, seq_len=args.seq_len,
                        repeats=args.repeats, warmup=3, threads=args.threads, device=args.device)
            key = f"{name}_{round(fraction * 100)}"
            results[key] = {"fraction_removed": fraction, "time_ratio": r["time_ratio"],
                            "time_ratio_paired": r["time_ratio_paired"], "flop_ratio": r["flop_ratio"],
                            "speedup": r["speedup"], "warning": r["warning"], "dense": r["dense"], "pruned": r["pruned"],
                            "goal_time_le_flop_plus_0.05": r["time_ratio"] <= r["flop_ratio"] + 0.05}
            d, p = r["dense"], r["pruned"]
            print(f"{name:<10} {fraction:>7.0%} {d['latency_ms_median']:>9.1f} {p['latency_ms_median']:>9.1f} "
                  f"{p['latency_ms_p10']:>7.1f}-{p['latency_ms_p90']:<7.1f} {d['params']:>6}→{p['params']:<6} "
                  f"{r['time_ratio']:>10.3f} {r['time_ratio_paired']:>7.3f} {r['flop_ratio']:>10.3f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
