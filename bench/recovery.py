"""Recovery after heavy pruning (issue 8's benchmark): dense / pruned / least-squares / fine-tuned accuracy.

On the `minilm-tweets` preset (6×12 heads): score heads by `--metric` (gradient, Michel et al. 2019) on a
validation sample, remove the least important 75% (54 of 72, every layer keeps ≥ 1), then
1. retraining-free least-squares recovery (`headprune.recovery.lsq.lsq_recover`, `--lsq-method`: refit the kept
   heads' output projection, or Kwon et al. 2022's per-head scales) on a calibration sample of the train
   split, baked into the pruned model;
2. `headprune.recovery.finetune.recover`: one epoch on the train split with distillation from the dense model,
   starting from the least-squares model; the step count is set from a measured step time so that the
   learning-rate schedule ends within `--time-budget` seconds (stopped there in any case).
Accuracy on the full test split after each stage, and the time each took (2 threads by default).

    python bench/recovery.py [--out FILE] [--threads 2] [--time-budget 600] [--train-limit N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from headprune.core.files import atomic_write_text  # noqa: E402
from headprune.evaluation.loop import evaluate  # noqa: E402
from headprune.model.surgery import prune  # noqa: E402
from headprune.presets import load_model  # noqa: E402
from headprune.recovery.finetune import recover  # noqa: E402
from headprune.scoring.api import score_heads  # noqa: E402
from headprune.search.masks import least_important  # noqa: E402
from headprune.sources.batches import make_batches  # noqa: E402
from headprune.sources.tweets import load_tweets  # noqa: E402


def batches_of(loaded, split: str, limit: int | None, batch_size: int, seed: int = 0):
    df = load_tweets(split, limit=limit, seed=seed)
    return make_batches(loaded.tokenizer, df, "classification", batch_size=batch_size, max_length=128, seed=seed)


def seconds_per_step(student, teacher, batches, probes: int = 3) -> float:
    """Measured seconds of one distillation step (teacher forward, student forward + backward), so that the
    learning-rate schedule can end within the time budget."""
    import copy

    from headprune.recovery.finetune import distillation_loss_fn

    model = copy.deepcopy(student).train()
    loss_fn = distillation_loss_fn(teacher, task="classification")
    times = []
    for batch in batches[: probes + 1]:
        t = time.perf_counter()
        loss_fn(model, batch).backward()
        times.append(time.perf_counter() - t)
    return 1.1 * sum(times[1:]) / len(times[1:])  # 10% for the optimizer step; first pass is warm-up


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "recovery.json"))
    parser.add_argument("--model", default="minilm-tweets")
    parser.add_argument("--metric", default="gradient")
    parser.add_argument("--remove", type=int, default=54, help="heads to remove (default: 54 of 72)")
    parser.add_argument("--score-examples", type=int, default=1000, help="validation examples to score on")
    parser.add_argument("--calib-examples", type=int, default=2048, help="train examples for least squares")
    parser.add_argument("--lsq-method", default="weights", choices=["weights", "scales"],
                        help="least squares: refit the kept heads' output projection, or rescale each head")
    parser.add_argument("--train-limit", type=int, default=None, help="train examples (default: the whole split)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--time-budget", type=float, default=600.0, help="seconds of fine-tuning at most")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    loaded = load_model(args.model)
    dense = loaded.model
    test = batches_of(loaded, "test", None, 64)
    results: dict = {"settings": {**vars(args), "torch": torch.__version__}, "model": loaded.model_id}
    t = time.perf_counter()
    dense_eval = evaluate(dense, test)
    results["dense_test_acc"], results["dense_eval_seconds"] = dense_eval["accuracy"], time.perf_counter() - t

    t = time.perf_counter()
    scores = score_heads(dense, batches_of(loaded, "validation", args.score_examples, 32), args.metric)
    keep = least_important(scores, args.remove, model=dense)
    results["score_seconds"] = time.perf_counter() - t
    results["heads_total"], results["heads_removed"] = keep.numel(), int((~keep).sum())
    results["heads_removed_frac"] = results["heads_removed"] / results["heads_total"]
    pruned = prune(dense, keep)
    results["pruned_test_acc"] = evaluate(pruned, test)["accuracy"]

    start = pruned
    try:
        from headprune.recovery.lsq import lsq_recover
    except ImportError:
        results["lsq_test_acc"], results["lsq_seconds"] = None, None  # no least-squares recovery in this tree
    else:
        t = time.perf_counter()
        recovery = lsq_recover(dense, keep, batches_of(loaded, "train", args.calib_examples, 32, seed=1),
                               method=args.lsq_method)
        start = prune(recovery.bake(dense), keep)
        results["lsq_seconds"] = time.perf_counter() - t
        results["lsq_test_acc"] = evaluate(start, test)["accuracy"]

    train = batches_of(loaded, "train", args.train_limit, args.batch_size)
    t = time.perf_counter()
    per_step = seconds_per_step(start, dense, train)
    max_steps = min(args.epochs * len(train), max(1, int(0.95 * args.time_budget / per_step)))
    deadline = t + args.time_budget
    recovered, report = recover(start, train, teacher=dense, distill=True, temperature=args.temperature,
                                alpha=args.alpha, epochs=args.epochs, lr=args.lr, max_steps=max_steps,
                                should_stop=lambda: time.perf_counter() > deadline)
    results["finetune_seconds"] = time.perf_counter() - t
    results["finetune_steps"], results["finetune_stopped_by_budget"] = report["steps"], report["stopped"]
    results["finetune_planned_steps"], results["probe_seconds_per_step"] = max_steps, per_step
    results["train_examples"] = sum(int(b["labels"].shape[0]) for b in train)
    results["recovered_test_acc"] = evaluate(recovered, test)["accuracy"]
    results["test_examples"] = dense_eval["n"]
    results["gap_to_dense_points"] = 100 * (results["dense_test_acc"] - results["recovered_test_acc"])

    print(f"{args.model}: {results['heads_removed']} of {results['heads_total']} heads removed by {args.metric}, "
          f"test split ({results['test_examples']} tweets), {args.threads} threads")
    print(f"{'stage':<24} {'test accuracy':>13} {'seconds':>8}")
    rows = [("dense", results["dense_test_acc"], None), ("pruned", results["pruned_test_acc"], results["score_seconds"]),
            ("+ least squares", results["lsq_test_acc"], results["lsq_seconds"]),
            (f"+ fine-tune ({results['finetune_steps']} steps)", results["recovered_test_acc"], results["finetune_seconds"])]
    for name, acc, secs in rows:
        print(f"{name:<24} {'—' if acc is None else f'{acc:.4f}':>13} {'' if secs is None else f'{secs:.1f}':>8}")
    print(f"gap to dense after fine-tuning: {results['gap_to_dense_points']:.2f} points")
    atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(f"written to {args.out}")
    return results


if __name__ == "__main__":
    main()
