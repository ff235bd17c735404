"""Live what-if on `minilm-tweets` (issue 6's benchmark): toggle-to-exact-accuracy time vs a full
re-evaluation, the `gradient` one-shot curve vs a random baseline, the validation budget search judged on
the full test split (before / after least-squares recovery), and the physical-pruning speedup of its mask.

    python bench/whatif_speed.py [--out FILE] [--val 512] [--curve-val 1024] [--budget-val N] [--parts ...]

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

from headprune.core.files import atomic_write_text  # noqa: E402
from headprune.evaluation.latency import measure  # noqa: E402
from headprune.evaluation.live import LiveEvaluator  # noqa: E402
from headprune.evaluation.loop import evaluate  # noqa: E402
from headprune.model import layout  # noqa: E402
from headprune.recovery.lsq import Recovery, lsq_recover, reconstruction_error  # noqa: E402
from headprune.scoring.api import score_heads  # noqa: E402
from headprune.search.budget import budget_mask  # noqa: E402
from headprune.search.curves import prune_curve, random_baseline  # noqa: E402
from headprune.search.iterative import iterative_scores  # noqa: E402
from headprune.sources.batches import make_batches  # noqa: E402
from headprune.sources.tweets import load_tweets  # noqa: E402

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
    from headprune.presets import load_model

    return load_model("minilm-tweets")


def toggles(model, live: LiveEvaluator, batches, rounds: int) -> dict:
    """Per layer, one head off (from dense): live evaluate vs full `evaluate`, interleaved; then back on."""
    layers, heads = layout.head_grid(model)
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
    parser.add_argument("--curve-val", type=int, default=1024,
                        help="curves: validation tweets evaluated (scored on as many training tweets)")
    parser.add_argument("--budget-val", type=int, default=None,
                        help="budget: validation tweets the search checks (default: the full split)")
    parser.add_argument("--calib", type=int, default=512,
                        help="budget: training tweets that rank the heads")
    parser.add_argument("--order-metric", default="ablation", help="budget: metric that ranks the heads")
    parser.add_argument("--order", default="iterative", choices=["one-shot", "iterative"],
                        help="budget: rank heads once, or iteratively (re-scored under the mask)")
    parser.add_argument("--step", type=float, default=4 / 72, help="budget: iterative step (fraction of heads)")
    parser.add_argument("--until", type=float, default=0.6,
                        help="budget: iterative ranking stops after this fraction (the rest keep their last order)")
    parser.add_argument("--recover-method", default="weights", choices=["weights", "scales"],
                        help="budget: least-squares recovery: refit the kept heads' projection, or rescale each head")
    parser.add_argument("--recover-target", default="auto", choices=["auto", "dense", "local"],
                        help="budget: fit layers to the dense model's output or to the dense attention on the pruned input")
    parser.add_argument("--lsq-calib", type=int, default=2048,
                        help="budget: training tweets (another sample than the ranking's) that calibrate least squares")
    parser.add_argument("--no-recover", action="store_true",
                        help="budget: judge candidates as masked, without least-squares recovery inside the search")
    parser.add_argument("--greedy", action="store_true",
                        help="budget: greedy refinement after the binary search (overfits a small validation set)")
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

    if "toggles" in parts:
        live = LiveEvaluator(model, val)
        out["cache_bytes"] = live.cache_bytes
        toggle_part(model, live, val, args, out)
        del live
        save()
    if "curves" in parts:
        curve_part(model, tok, args, out)
        save()
    if "budget" in parts:
        budget_part(model, tok, test, args, out)
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


def curve_part(model, tok, args, out):
    """`gradient` one-shot (scored on training tweets) vs random orders, both evaluated on validation tweets."""
    curve_val = make_batches(tok, load_tweets("validation", limit=args.curve_val, seed=0), "classification",
                             batch_size=args.batch_size, max_length=128)
    calib = make_batches(tok, load_tweets("train", limit=args.curve_val, seed=0), "classification",
                         batch_size=args.batch_size, max_length=128)
    live = LiveEvaluator(model, curve_val, max_cache_bytes=4 << 30)
    grad = score_heads(model, calib, "gradient")
    curve = prune_curve(model, curve_val, "gradient", FRACTIONS, scores=grad, evaluator=live)
    base = random_baseline(model, curve_val, FRACTIONS, seeds=tuple(range(args.seeds)), evaluator=live)
    merged = curve.merge(base, on="fraction")
    merged["gradient_ge_random_mean"] = merged["accuracy"] >= merged["mean"]
    out["curve"] = merged.to_dict(orient="records")
    out["curve_val_examples"] = sum(len(b["labels"]) for b in curve_val)
    out["curve_dense_val_acc"] = live.dense["accuracy"]
    print(f"curves on {out['curve_val_examples']} validation tweets; dense accuracy {live.dense['accuracy']:.4f}")
    print(merged[["fraction", "heads_kept", "accuracy", "mean", "low", "high"]].rename(
        columns={"accuracy": "gradient", "mean": "random_mean", "low": "random_min", "high": "random_max"}).to_string(index=False))


def budget_part(model, tok, test, args, out):
    """Rank heads on training tweets (`--order`), binary-search the budget on validation (each candidate
    after least-squares recovery unless --no-recover), judge on the full test split before/after recovery
    (`--recover-method` calibrated on `--lsq-calib` other training tweets)."""
    budget_val = make_batches(tok, load_tweets("validation", limit=args.budget_val, seed=0), "classification",
                              batch_size=args.batch_size, max_length=128)
    calib = make_batches(tok, load_tweets("train", limit=args.calib, seed=0), "classification",
                         batch_size=args.batch_size, max_length=128)
    lsq_calib = make_batches(tok, load_tweets("train", limit=args.lsq_calib, seed=1), "classification",
                             batch_size=args.batch_size, max_length=128)
    start = time.perf_counter()  # (score_heads' disk cache makes a repeated run with the same calibration quick)
    scores = (score_heads(model, calib, args.order_metric) if args.order == "one-shot" else
              iterative_scores(model, calib, args.order_metric, step=args.step, until=args.until,
                               progress=lambda f, msg: print(f"  [{time.perf_counter() - start:6.0f} s] {msg}", flush=True)))
    out["budget_rank_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    evaluator = LiveEvaluator(model, budget_val, max_cache_bytes=8 << 30) if args.no_recover else None  # ~4 GB
    keep, info = budget_mask(model, budget_val, scores, max_drop=args.max_drop, greedy=args.greedy, evaluator=evaluator,
                             recover_batches=None if args.no_recover else lsq_calib, recover_method=args.recover_method,
                             recover_target=args.recover_target,
                             progress=lambda f, msg: print(f"  [{time.perf_counter() - start:6.0f} s] {msg}", flush=True))
    out["budget_seconds"] = time.perf_counter() - start
    recovery = info.pop("recovery")
    if recovery is None:
        start = time.perf_counter()
        recovery = lsq_recover(model, keep, lsq_calib, method=args.recover_method, target=args.recover_target)
        out["lsq_seconds"] = time.perf_counter() - start
    dense_test = evaluate(model, test)["accuracy"]
    masked_test = evaluate(model, test, keep)["accuracy"]
    masked_val = evaluate(model, budget_val, keep)["accuracy"]
    with recovery.applied(model):
        lsq_test = evaluate(model, test)["accuracy"]
        lsq_val = evaluate(model, budget_val)["accuracy"]
    err_before = reconstruction_error(model, Recovery.of_mask(model, keep), lsq_calib[:8])
    err_after = reconstruction_error(model, recovery, lsq_calib[:8])
    out.update({"budget_info": info, "budget_val_examples": sum(len(b["labels"]) for b in budget_val),
                "budget_order": f"{args.order} {args.order_metric}", "budget_recover_in_search": not args.no_recover,
                "budget_heads_removed_frac": info["fraction_removed"],
                "budget_heads_per_layer": keep.sum(-1).tolist(), "budget_mask": keep.int().tolist(),
                "budget_recover_method": args.recover_method, "budget_recover_target": recovery.target,
                "budget_lsq_calib": args.lsq_calib,
                "budget_gates": recovery.gates.tolist(), "dense_test_acc": dense_test, "budget_val_acc_masked": masked_val,
                "budget_test_acc": masked_test, "budget_test_acc_drop": dense_test - masked_test,
                "lsq_val_acc": lsq_val, "lsq_test_acc": lsq_test, "budget_test_acc_drop_lsq": dense_test - lsq_test,
                "reconstruction_error_before": err_before.tolist(), "reconstruction_error_after": err_after.tolist()})
    print(f"budget (val drop ≤ {args.max_drop}, {out['budget_val_examples']} validation tweets, {args.order} {args.order_metric} "
          f"order, {'masked' if args.no_recover else 'least-squares recovered (' + args.recover_method + ')'} candidates): {info['heads_removed']} "
          f"heads removed ({info['fraction_removed']:.1%}), {info['steps']} evaluations in {out['budget_seconds']:.0f} s "
          f"(+{out['budget_rank_seconds']:.0f} s ranking); val {info['val']:.4f} vs dense {info['dense']:.4f}")
    print(f"  test: dense {dense_test:.4f}, masked {masked_test:.4f} (drop {100 * (dense_test - masked_test):+.2f} pts), "
          f"+ least squares {lsq_test:.4f} (drop {100 * (dense_test - lsq_test):+.2f} pts); "
          f"val masked {masked_val:.4f}, with least squares {lsq_val:.4f}")
    print("  reconstruction error per layer before → after: " + ", ".join(
        f"{b:.3f}→{a:.3f}" for b, a in zip(err_before.tolist(), err_after.tolist())))
    speed = measure(model, keep, batch_size=8, seq_len=128, repeats=20, warmup=3, threads=args.threads)
    out["budget_speed"] = {k: speed[k] for k in ("time_ratio", "flop_ratio", "speedup", "warning", "dense", "pruned")}
    print(f"  physical pruning at this mask (8×128, {args.threads} threads): {speed['dense']['latency_ms_median']:.1f} → "
          f"{speed['pruned']['latency_ms_median']:.1f} ms, time ratio {speed['time_ratio']:.3f}, "
          f"FLOP ratio {speed['flop_ratio']:.3f}, speedup {speed['speedup']:.2f}×")


if __name__ == "__main__":
    main()
