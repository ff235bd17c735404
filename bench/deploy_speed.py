"""The pruned model where it runs: ONNX export, parity with PyTorch, ONNX Runtime vs PyTorch latency (deploy).

Models: a random BERT-base-sized classifier (12 layers × 12 heads, hidden 768) with 50% of its heads removed,
unevenly per layer (2 to 10 per layer, chosen at random, seed 0), and `minilm-tweets` at the budget mask of
`bench/results/whatif_budget_val512.json` (raw all-MiniLM-L6-v2 with a fresh 3-label head when the preset is
not built; `--budget-mask` takes another mask JSON). Each pruned model is exported with
`headprune.deploy.export_onnx`; parity with PyTorch on 32 test tweets (max |Δ logit|, prediction agreement).
Timing: batch 8 × 128 tokens, ONNX Runtime (CPU) and PyTorch, both 2 threads, 3 warm-up + N timed passes,
dense and pruned interleaved, medians. Goals: parity <= 1e-4; ONNX Runtime time ratio <= FLOP ratio + 0.05.

    python bench/deploy_speed.py [--out FILE] [--repeats 20] [--threads 2] [--quick]

`--quick` checks that the script works (a 4-layer BERT, 2 × 32 tokens, 3 repeats); its timings mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from _common import minilm_classifier  # noqa: E402
import transformers  # noqa: E402

from headprune.core.files import atomic_write_text  # noqa: E402
from headprune.deploy import (  # noqa: E402
    LatencySettings,
    compare_runtimes,
    export_onnx,
    measure_onnx,
)
from headprune.model import layout  # noqa: E402
from headprune.model.schema import mask_from_dict  # noqa: E402
from headprune.sources.batches import make_batches  # noqa: E402
from headprune.sources.tweets import load_tweets  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BUDGET_FILE = RESULTS / "whatif_budget_val512.json"
REMOVED_PER_LAYER = {12: (2, 4, 6, 8, 10, 4, 6, 8, 2, 10, 6, 6), 4: (2, 4, 8, 10)}  # half of all heads, uneven


def bert_base(quick: bool):
    torch.manual_seed(0)
    size = dict(hidden_size=384, num_hidden_layers=4, intermediate_size=1536) if quick else dict(
        hidden_size=768, num_hidden_layers=12, intermediate_size=3072)
    config = transformers.BertConfig(num_attention_heads=12, num_labels=3, **size)
    return transformers.BertForSequenceClassification(config).eval(), f"random BERT ({size['num_hidden_layers']}×12, d={size['hidden_size']})"


def uneven_half(model) -> torch.Tensor:
    layers, heads = layout.head_grid(model)
    gen = torch.Generator().manual_seed(0)
    keep = torch.ones(layers, heads, dtype=torch.bool)
    for layer, n in enumerate(REMOVED_PER_LAYER[layers]):
        keep[layer, torch.randperm(heads, generator=gen)[:n]] = False
    return keep


def budget_mask(model, path: Path) -> torch.Tensor:
    record = json.loads(path.read_text(encoding="utf-8"))
    if "budget_mask" in record:  # a whatif_speed.py result
        return torch.tensor(record["budget_mask"], dtype=torch.bool)
    return mask_from_dict(record, model, check_model_id=False)


def run_one(name, model, keep, batches, settings, work: Path) -> dict:
    """Export (with parity), then ONNX Runtime and PyTorch latency, dense vs pruned."""
    export = export_onnx(model, work / f"{name}.onnx", keep, batches=batches, model_id=name, overwrite=True)
    ort = measure_onnx(model, keep, settings, pruned_path=export.path)
    pt = compare_runtimes(model, keep, settings, runtimes=("torch",))["torch"]
    return {"heads_kept": int(keep.sum()), "heads_per_layer": keep.sum(-1).tolist(),
            "time_ratio": ort.time_ratio, "time_ratio_paired": ort.time_ratio_paired, "flop_ratio": ort.flop_ratio,
            "goal_time_le_flop_plus_0.05": ort.time_ratio <= ort.flop_ratio + 0.05,
            "parity": export.parity.to_dict(), "export_seconds": export.seconds, "onnx_bytes": export.file_bytes,
            "onnxruntime": ort.to_dict(), "torch": pt.to_dict(), "warning": ort.warning}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON file (default bench/results/deploy_speed[_quick].json)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--budget-mask", default=str(BUDGET_FILE), help="mask JSON (or a whatif_speed.py result)")
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the script, times nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.seq_len, args.repeats = 2, 32, 3
    out = Path(args.out or RESULTS / ("deploy_speed_quick.json" if args.quick else "deploy_speed.json"))
    settings = LatencySettings(args.batch_size, args.seq_len, args.repeats, 1 if args.quick else 3, args.threads)
    mini, tokenizer, mini_source = minilm_classifier()
    tweets = load_tweets("test", limit=8 if args.quick else 32, seed=0)
    batches = make_batches(tokenizer, tweets, "classification", batch_size=8, max_length=args.seq_len)
    base, base_source = bert_base(args.quick)
    results = {"settings": {**vars(args), "torch": torch.__version__, "transformers": transformers.__version__},
               "onnx_bert_base_50_source": base_source, "onnx_minilm_budget_source": mini_source,
               "parity_examples": f"{len(tweets)} test tweets"}
    print(f"{'model':<20} {'runtime':<12} {'dense ms':>9} {'pruned ms':>9} {'time ratio':>10} {'paired':>7} "
          f"{'FLOP ratio':>10} {'parity':>9}")
    with tempfile.TemporaryDirectory(prefix="headprune-deploy-bench-") as work:
        for key, model, keep in (("onnx_bert_base_50", base, uneven_half(base)),
                                 ("onnx_minilm_budget", mini, budget_mask(mini, Path(args.budget_mask)))):
            r = results[key] = run_one(key, model, keep, batches, settings, Path(work))
            for runtime in ("onnxruntime", "torch"):
                t = r[runtime]
                print(f"{key:<20} {runtime:<12} {t['dense']['latency_ms_median']:>9.1f} "
                      f"{t['pruned']['latency_ms_median']:>9.1f} {t['time_ratio']:>10.3f} {t['time_ratio_paired']:>7.3f} "
                      f"{t['flop_ratio']:>10.3f} {r['parity']['max_abs_diff']:>9.1e}", flush=True)
            if r["warning"]:
                print(f"  {r['warning']}")
    results["onnx_parity_max_abs"] = max(results[k]["parity"]["max_abs_diff"]
                                         for k in ("onnx_bert_base_50", "onnx_minilm_budget"))
    results["goal_parity_le_1e-4"] = results["onnx_parity_max_abs"] <= 1e-4
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    print(f"parity max |Δ logit| {results['onnx_parity_max_abs']:.2e}; wrote {out}")
    return results


if __name__ == "__main__":
    main()
