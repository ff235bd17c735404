"""Live what-if on `minilm-tweets` (issue 6's benchmark): toggle-to-exact-accuracy time vs a full
re-evaluation, the `gradient` one-shot curve vs a random baseline, the validation budget search judged on
the full test split (before / after least-squares recovery), and the physical-pruning speedup of its mask.

    python bench/whatif_speed.py [--out FILE] [--val 512] [--rounds 2] [--wait 3600]

Waits (up to --wait seconds) for the preset to be built by someone else rather than building it here.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from headprune import arch  # noqa: E402
from headprune.atomic import atomic_write_text  # noqa: E402
from headprune.batches import make_batches  # noqa: E402
from headprune.cost import measure  # noqa: E402
from headprune.data import load_tweets  # noqa: E402
from headprune.evaluate import evaluate  # noqa: E402
from headprune.live import LiveEvaluator  # noqa: E402
from headprune.mask import gated  # noqa: E402
from headprune.recover import lsq_gates, reconstruction_error  # noqa: E402
from headprune.score import score_heads  # noqa: E402
from headprune.search import budget_mask, prune_curve, random_baseline  # noqa: E402

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def wait_for_preset(seconds: float):
    from headprune.presets import preset_meta

    deadline = time.time() + seconds
    while preset_meta("minilm-tweets") is None:
        if time.time() > deadline:
            raise SystemExit("minilm-tweets is not built; build it with `headprune` (any command using it) first")
        time.sleep(20)


def load_minilm_tweets(wait: float):
    wait_for_preset(wait)
    from headprune.models import load_model

    return load_model("minilm-tweets")


def toggles(model, live: LiveEvaluator, batches, rounds: int) -> dict:
    """Per layer, one head off (from dense): live evaluate vs full `evaluate`, interleaved; then back on."""
    layers, heads = arch.head_grid(model)
    dense = torch.ones(layers, heads, dtype=torch.bool)
    rows = []
    for r in range(rounds):
        for layer in range(layers):
            keep = dense.clone()
            keep[layer, (layer + r) % heads] = False
            start = time.perf_counter()
            fast = live.evaluate(keep)
            toggle_s = time.perf_counter() - start
            start = time.perf_counter()
            full = evaluate(model, batches, keep)
            naive_s = time.perf_counter() - start
            start = time.perf_counter()
            live.evaluate(dense)
            back_s = time.perf_counter() - start
            rows.append({"layer": layer, "toggle_s": toggle_s, "naive_s": naive_s, "back_s": back_s,
                         "accuracy": fast["accuracy"], "abs_loss_diff": abs(fast["loss"] - full["loss"]),
                         "same_accuracy": fast["accuracy"] == full["accuracy"]})
    toggle = statistics.median(r["toggle_s"] for r in rows)
    naive = statistics.median(r["naive_s"] for r in rows)
    per_layer = {l: statistics.median(r["toggle_s"] / r["naive_s"] for r in rows if r["layer"] == l) for l in range(layers)}
    return {"toggle_s_median": toggle, "naive_s_median": naive, "toggle_over_naive_median": toggle / naive,
            "toggle_over_naive_by_layer": per_layer,
            "back_s_median": statistics.median(r["back_s"] for r in rows),
            "max_abs_loss_diff": max(r["abs_loss_diff"] for r in rows),
            "all_accuracies_identical": all(r["same_accuracy"] for r in rows), "rows": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "whatif_speed.json"))
    parser.add_argument("--val", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-drop", type=float, default=0.01)
    parser.add_argument("--wait", type=float, default=3600)
    parser.add_argument("--test-limit", type=int, default=None, help="test tweets (default: the full split)")
    parser.add_argument("--seeds", type=int, default=5, help="random-baseline seeds")
    parser.add_argument("--parts", default="toggles,curves,budget",
                        help="comma-separated parts to run (toggles, curves, budget); the JSON is rewritten after each")
    parser.add_argument("--no-greedy", action="store_true",
                        help="budget: binary search only (the greedy refinement can overfit a small validation set)")
    parser.add_argument("--merge", action="store_true", help="update the JSON at --out instead of replacing it")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_minilm_tweets(args.wait)
    model, tok = loaded.model.eval(), loaded.tokenizer
    val_df = load_tweets("validation", limit=args.val, seed=0)
    test_df = load_tweets("test", limit=args.test_limit, seed=0)
    val = make_batches(tok, val_df, "classification", batch_size=args.batch_size, max_length=128)
    test = make_batches(tok, test_df, "classification", batch_size=args.batch_size, max_length=128)
    out: dict = json.loads(Path(args.out).read_text()) if args.merge and Path(args.out).is_file() else {}
    run = {"settings": vars(args), "val_examples": len(val_df), "test_examples": len(test_df)}
    out.update({f"{key}_{args.parts.replace(',', '_')}": value for key, value in run.items()} if args.merge else run)

    parts = set(args.parts.split(","))

    def save():
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(out, indent=2, default=float) + "\n")

    live = LiveEvaluator(model, val)
    out["cache_bytes"] = live.cache_bytes
    if "toggles" in parts:
        toggle_part(model, live, val, args, out)
        save()
    grad = score_heads(model, val, "gradient")
    if "curves" in parts:
        curve_part(model, live, val, grad, args, out)
        save()
    if "budget" in parts:
        budget_part(model, live, val, test, grad, args, out)
        save()
    print(f"wrote {args.out}")
    return out


def toggle_part(model, live, val, args, out):
    t = toggles(model, live, val, args.rounds)
    out.update({k: v for k, v in t.items() if k != "rows"})
    out["toggle_rows"] = t["rows"]
    print(f"toggle → exact accuracy: median {t['toggle_s_median']:.3f} s; naive full re-evaluation "
          f"{t['naive_s_median']:.3f} s; ratio {t['toggle_over_naive_median']:.2f} (goal ≤ 0.40); "
          f"identical accuracies: {t['all_accuracies_identical']}, max |Δloss| {t['max_abs_loss_diff']:.2e}")
    print("  ratio by layer: " + ", ".join(f"L{l} {v:.2f}" for l, v in t["toggle_over_naive_by_layer"].items()))
    start = time.perf_counter()
    live.estimate(live.keep)
    out["taylor_first_s"] = time.perf_counter() - start


def curve_part(model, live, val, grad, args, out):
    curve = prune_curve(model, val, "gradient", FRACTIONS, scores=grad, evaluator=live)
    base = random_baseline(model, val, FRACTIONS, seeds=tuple(range(args.seeds)), evaluator=live)
    merged = curve.merge(base, on="fraction")
    merged["gradient_ge_random_mean"] = merged["accuracy"] >= merged["mean"]
    out["curve"] = merged.to_dict(orient="records")
    print(f"dense validation accuracy {live.dense['accuracy']:.4f}")
    print(merged[["fraction", "heads_kept", "accuracy", "mean", "low", "high"]].rename(
        columns={"accuracy": "gradient", "mean": "random_mean", "low": "random_min", "high": "random_max"}).to_string(index=False))



def budget_part(model, live, val, test, grad, args, out):
    start = time.perf_counter()
    keep, info = budget_mask(model, val, grad, max_drop=args.max_drop, greedy=not args.no_greedy, evaluator=live)
    out["budget_seconds"] = time.perf_counter() - start
    dense_test = evaluate(model, test)["accuracy"]
    masked_test = evaluate(model, test, keep)["accuracy"]
    start = time.perf_counter()
    gates = lsq_gates(model, keep, val)
    out["lsq_seconds"] = time.perf_counter() - start
    with gated(model, gates):
        lsq_test = evaluate(model, test)["accuracy"]
        lsq_val = evaluate(model, val)["accuracy"]
    err_before = reconstruction_error(model, keep.float(), val)
    err_after = reconstruction_error(model, gates, val)
    out.update({"budget_info": info, "budget_heads_removed_frac": info["fraction_removed"],
                "budget_heads_per_layer": keep.sum(-1).tolist(), "budget_mask": keep.int().tolist(),
                "dense_test_acc": dense_test, "budget_test_acc": masked_test,
                "budget_test_acc_drop": dense_test - masked_test, "lsq_val_acc": lsq_val, "lsq_test_acc": lsq_test,
                "budget_test_acc_drop_lsq": dense_test - lsq_test,
                "reconstruction_error_before": err_before.tolist(), "reconstruction_error_after": err_after.tolist()})
    print(f"budget (val drop ≤ {args.max_drop}): {info['heads_removed']} heads removed ({info['fraction_removed']:.1%}), "
          f"{info['steps']} evaluations in {out['budget_seconds']:.1f} s; val {info['val']:.4f} vs dense {info['dense']:.4f}")
    print(f"  test: dense {dense_test:.4f}, masked {masked_test:.4f} (drop {dense_test - masked_test:+.4f}), "
          f"+ least squares {lsq_test:.4f} (drop {dense_test - lsq_test:+.4f}); val with lsq {lsq_val:.4f}")
    print("  reconstruction error per layer before → after: " + ", ".join(
        f"{b:.3f}→{a:.3f}" for b, a in zip(err_before.tolist(), err_after.tolist())))
    speed = measure(model, keep, batch_size=8, seq_len=128, repeats=20, warmup=3, threads=args.threads)
    out["budget_speed"] = {k: speed[k] for k in ("time_ratio", "flop_ratio", "speedup", "warning", "dense", "pruned")}
    print(f"  physical pruning at this mask (8×128, {args.threads} threads): {speed['dense']['latency_ms_median']:.1f} → "
          f"{speed['pruned']['latency_ms_median']:.1f} ms, time ratio {speed['time_ratio']:.3f}, "
          f"FLOP ratio {speed['flop_ratio']:.3f}, speedup {speed['speedup']:.2f}×")


if __name__ == "__main__":
    main()
