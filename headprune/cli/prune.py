"""`headprune prune`: choose heads (a mask file, the N least important, or a budget search), optionally recover
by least squares, remove them physically and save the smaller model (checked by reloading it)."""
from __future__ import annotations

import argparse

from ..core.errors import UserError
from ..model.schema import mask_to_dict, write_mask
from ..recovery.lsq import check_feed_forward
from ..scoring.registry import check_metric
from ..search.masks import check_min_heads
from .common import (
    Command,
    add_model_args,
    add_output_args,
    add_overwrite_arg,
    calibration_batches,
    finite,
    open_bench,
    progress_bar,
    read_keep,
    whole,
)


def build(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser, default_split="validation")
    how = parser.add_argument_group("which heads go (one of --mask, --fraction/--heads, --budget)")
    how.add_argument("--mask", default=None, metavar="MASK.json", help="remove the heads this mask drops")
    how.add_argument("--metric", default="gradient", help="score to rank heads by (default: gradient)")
    how.add_argument("--fraction", type=finite, default=None, help="remove this fraction of all heads, least important first")
    how.add_argument("--heads", type=whole, default=None, metavar="N", help="remove N heads, least important first")
    how.add_argument("--budget", type=finite, default=None, metavar="POINTS",
                     help="remove as many heads as possible losing at most POINTS of accuracy on --split (default validation)")
    how.add_argument("--iterative", type=finite, default=None, metavar="STEP",
                     help="rank heads by iterative pruning: re-score under the mask after every STEP fraction removed")
    how.add_argument("--until", type=finite, default=None, metavar="FRACTION",
                     help="--iterative with --budget: stop re-scoring once this fraction of heads is ranked (the rest "
                          "keep their last scores; default 1.0, which costs a scoring round per STEP)")
    how.add_argument("--greedy", action="store_true",
                     help="--budget: then try each remaining head on top (overfits small data; use thousands of examples)")
    how.add_argument("--recover", nargs="?", const="weights", default=None, choices=["weights", "scales"],
                     help="retraining-free least-squares recovery (label-free): refit the kept heads' output "
                          "projection (weights, the default) or only rescale each kept head (scales); with --budget, "
                          "every candidate is judged after it; the saved model carries the refit")
    how.add_argument("--recover-target", default="auto", choices=["auto", "dense", "local"],
                     help="--recover: fit each layer to the dense model's output (dense, corrects upstream error) or "
                          "to the dense attention on the pruned input (local); auto: dense for BERT-style post-norm "
                          "blocks, local for pre-norm decoders")
    how.add_argument("--recover-ffn", action="store_true",
                     help="--recover: refit the feed-forward outputs too (BERT-style post-norm encoders, dense target; "
                          "wants a thousand or more calibration examples)")
    how.add_argument("--calib-split", default=None, metavar="SPLIT",
                     help="--recover: calibrate on this split of --data (default: train when the data has splits; "
                          "calibrating on the data a budget is judged on makes the judgement optimistic)")
    how.add_argument("--min-heads-per-layer", type=whole, default=1, help="heads every layer keeps (default: 1)")
    how.add_argument("--unit-mode", default="head", choices=["head", "group-equal", "kv-group"],
                     help="grouped-query attention: prune heads, equal heads per KV group, or whole KV groups")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the pruned model (load with load_pruned)")
    parser.add_argument("--mask-out", default=None, metavar="MASK.json", help="also write the mask used")
    add_overwrite_arg(parser)
    add_output_args(parser)


def outputs(args: argparse.Namespace) -> list:
    return [(args.out, "pruned-model", "out"), (args.mask_out, "mask", "mask_out")]


def _check(args: argparse.Namespace) -> None:
    """Everything the options alone can tell is wrong, before any loading."""
    chosen = [flag for flag, value in (("--mask", args.mask), ("--fraction", args.fraction), ("--heads", args.heads),
                                       ("--budget", args.budget)) if value is not None]
    if len(chosen) != 1:
        raise UserError("say which heads to remove with exactly one of --mask, --fraction, --heads or --budget"
                        + (f" (got {', '.join(chosen)})" if chosen else ""))
    rules = [
        (args.fraction is not None and not 0 <= args.fraction <= 1, f"--fraction must lie in [0, 1], got {args.fraction}"),
        (args.budget is not None and args.budget < 0, f"--budget is the accuracy points you accept to lose, ≥ 0; got {args.budget}"),
        (args.iterative is not None and not 0 < args.iterative <= 1,
         f"--iterative is the fraction of heads removed per round, in (0, 1]; got {args.iterative}"),
        (args.iterative is not None and args.mask, "--iterative ranks heads by a metric; it does not apply to --mask"),
        (args.until is not None and (args.iterative is None or args.budget is None),
         "--until bounds the iterative ranking of a --budget search; add --iterative STEP --budget POINTS"),
        (args.until is not None and not 0 < args.until <= 1, f"--until is a fraction of all heads in (0, 1]; got {args.until}"),
        (args.greedy and args.budget is None, "--greedy refines a --budget search; add --budget POINTS"),
        (args.calib_split is not None and args.recover is None, "--calib-split is the data --recover calibrates on; add --recover"),
        (args.recover_ffn and args.recover != "weights", "--recover-ffn extends --recover weights; add --recover"),
    ]
    for broken, message in rules:
        if broken:
            raise UserError(message)
    if not args.mask:
        check_metric(args.metric)


def _choose(args: argparse.Namespace, bench, calib) -> tuple:
    """(keep, budget result or None)."""
    layers, heads = bench.shape
    check_min_heads(args.min_heads_per_layer, heads)
    if args.mask:
        return read_keep(args.mask, bench), None
    with progress_bar(args, f"choosing heads ({args.metric}{', iterative' if args.iterative else ''})") as bar:
        if args.budget is not None:
            result = bench.budget(args.metric, args.budget / 100, recover=args.recover, recover_target=args.recover_target,
                                  recover_feed_forward=args.recover_ffn, calib_batches=calib, iterative=args.iterative,
                                  until=args.until or 1.0, greedy=args.greedy, min_heads_per_layer=args.min_heads_per_layer,
                                  unit_mode=args.unit_mode, progress=bar)
            return result.keep, result
        n = args.heads if args.heads is not None else round(args.fraction * layers * heads)
        return bench.least_important(args.metric, n, min_heads_per_layer=args.min_heads_per_layer,
                                     unit_mode=args.unit_mode, iterative=args.iterative, seed=args.seed,
                                     progress=bar), None


def run(args: argparse.Namespace) -> dict:
    _check(args)
    bench = open_bench(args)
    if args.recover_ffn:
        check_feed_forward(bench.model, args.recover_target, option="recover_ffn")
    calib, calib_split = calibration_batches(args, bench)
    keep, search = _choose(args, bench, calib)
    recovery = search.recovery if search is not None else None
    if args.recover and recovery is None and not bool(keep.all()):
        with progress_bar(args, f"least-squares recovery ({args.recover})") as bar:
            recovery = bench.recover(keep, args.recover, target=args.recover_target, calib=(calib, str(calib_split)),
                                     evaluate=False, feed_forward=args.recover_ffn, progress=bar).recovery
    loaded = bench.workload.loaded
    how = {"mask": args.mask, "metric": None if args.mask else args.metric, "fraction": args.fraction,
           "heads": args.heads, "budget_points": args.budget, "iterative_step": args.iterative,
           "recovered": None if recovery is None else recovery.method,
           "recover_target": None if recovery is None else recovery.target,
           "recover_feed_forward": None if recovery is None else recovery.feed_forward,
           "calib_split": None if recovery is None else calib_split, "data": args.data, "split": bench.workload.split}
    meta = {"source_model": loaded.model_id, "pruned_by": "headprune prune", **how}
    with progress_bar(args, "pruning, saving and checking") as bar:
        bar(0.1, "pruning")
        saved = bench.export(keep, args.out, recovery=recovery, overwrite=args.overwrite,
                             meta={**meta, "mask": mask_to_dict(keep, bench.model, model_id=loaded.model_id)})
    if args.mask_out:
        write_mask(args.mask_out, keep, bench.model, model_id=loaded.model_id, meta=meta)
    summary = {k: v for k, v in (search or {}).items() if k not in ("keep", "recovery", "path")}
    return {"command": "prune", "model": loaded.model_id, "out": args.out, "heads_kept": int(keep.sum()),
            "heads_total": int(keep.numel()), "parameters_before": saved.params_before,
            "parameters_after": saved.params_after, "reload_max_abs_diff": saved.max_abs_diff, **how,
            "search": summary}


def render(result: dict) -> str:
    lines = [f"model       {result['model']}",
             f"heads kept  {result['heads_kept']} of {result['heads_total']}",
             f"parameters  {result['parameters_before']:,} → {result['parameters_after']:,}"]
    if result["search"]:
        lines.append("search      " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in result["search"].items()))
    if result["recovered"]:
        also = ", feed-forward outputs too" if result["recover_feed_forward"] else ""
        lines.append(f"recovered   least squares ({result['recovered']}, {result['recover_target']} target{also}), "
                     f"calibrated on {result['calib_split'] or 'the judging data'}")
    lines.append(f"saved to    {result['out']} (reloaded: max |Δ logit| {result['reload_max_abs_diff']:.1e}; "
                 f"headprune.load_pruned, or --model {result['out']})")
    return "\n".join(lines)


COMMAND = Command("prune", "remove heads physically and save the smaller model", build, run, render, outputs)
