"""The `headprune` command line: thin sub-commands over the engine's functions.

Each sub-command is a `Command` in `COMMANDS`: a parser builder (adds its options), a thin `run(args) -> dict`
that calls one library function, and an optional `render(result) -> str` for the readable summary.
`--json` prints exactly one JSON object on stdout; progress bars and messages go to stderr.
Exit codes: 0 ok; 2 bad usage or bad input (one line `headprune: error: <reason>` on stderr); 1 any other failure
(set HEADPRUNE_DEBUG=1 for the traceback); 130 interrupted.

Add a sub-command:

    def build_score(parser): add_model_args(parser); parser.add_argument("--metric", ...)
    def run_score(args): loaded, df, batches = load_workload(args); return score_heads(...)
    register(Command("score", "rank heads by importance", build_score, run_score))
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_BATCH_SIZE = {"classification": 32, "masked-lm": 32, "causal-lm": 8}


@dataclass
class Command:
    name: str
    help: str
    build: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict]
    render: Callable[[dict], str] | None = None


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add a sub-command (a later registration under the same name replaces the earlier one)."""
    COMMANDS[command.name] = command
    return command


# ----------------------------------------------------------------------------------- shared options
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 1, got {value}")
    return value


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The options every model + data command shares."""
    from .presets import PRESETS

    group = parser.add_argument_group("model and data")
    group.add_argument("--model", required=True, metavar="PRESET|HUB_ID|DIR",
                       help=f"a preset ({', '.join(PRESETS)}), a Hub id, or a folder saved with save_pretrained / save_pruned")
    group.add_argument("--data", default="tweets", metavar="tweets|HUB_NAME|FILE",
                       help="'tweets' (built in), a Hub dataset name, or a CSV/TSV/JSON/JSONL/Parquet file (default: tweets)")
    group.add_argument("--split", default="test", help="train, validation (val, dev) or test (default: test)")
    group.add_argument("--config-name", default=None, help="the Hub dataset's configuration (e.g. sst2 for glue)")
    group.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                       help="evaluate a seeded random sample of N examples")
    group.add_argument("--seed", type=int, default=0, help="seed for sampling and masking (default: 0)")
    group.add_argument("--batch-size", type=_positive_int, default=None,
                       help="examples per batch (default: 32; 8 for causal language models)")
    group.add_argument("--max-length", type=_positive_int, default=128, help="tokens per example (default: 128)")
    group.add_argument("--text-column", default=None, help="the data's text column (guessed when omitted)")
    group.add_argument("--text-pair-column", default=None, help="the second text of a pair task, if any")
    group.add_argument("--label-column", default=None, help="the data's label column (guessed when omitted)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="allow a model that ships its own code to run it (only for models you trust)")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a summary")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def progress_bar(args: argparse.Namespace, description: str):
    """A `progress(fraction, message)` callback drawing on stderr (silent with --quiet); close it after use."""
    from .distributed import is_main
    from .train import TqdmProgress

    return TqdmProgress(description, disable=bool(getattr(args, "quiet", False)) or not is_main())


def load_workload(args: argparse.Namespace):
    """(LoadedModel, data frame, batches) from the shared model/data options."""
    from .models import load_model

    with progress_bar(args, f"loading {args.model}") as bar:
        loaded = load_model(args.model, trust_remote_code=args.trust_remote_code, progress=bar)
    df, batches = split_batches(args, loaded, args.split, args.limit)
    return loaded, df, batches


def split_batches(args: argparse.Namespace, loaded, split: str, limit: int | None):
    """(data frame, batches) of one split of the `--data` option for `loaded`."""
    from .batches import make_batches
    from .data import load_data

    df = load_data(
        args.data, split=split, text_column=args.text_column, text_pair_column=args.text_pair_column,
        label_column=args.label_column, config_name=args.config_name,
        label2id=loaded.label2id if loaded.task == "classification" else None, limit=limit, seed=args.seed,
    )
    batch_size = args.batch_size or DEFAULT_BATCH_SIZE.get(loaded.task, 32)
    batches = make_batches(loaded.tokenizer, df, loaded.task, batch_size=batch_size, max_length=args.max_length,
                           seed=args.seed)
    return df, batches


def read_keep(path: str, loaded):
    """A keep-mask for `loaded` (a LoadedModel) from a JSON file written by headprune."""
    if not os.path.isfile(path):
        raise ValueError(f"no such mask file: {path}")
    from .mask import read_mask

    return read_mask(path, loaded.model, model_id=loaded.model_id)


# ------------------------------------------------------------------------------------------- eval
def build_eval(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--mask", default=None, metavar="MASK.json", help="evaluate with only the heads this mask keeps")
    parser.add_argument("--zero-shot", action="store_true",
                        help="causal LMs: also report zero-shot sentiment accuracy from label-word logits")
    add_output_args(parser)


def run_eval(args: argparse.Namespace) -> dict:
    from .evaluate import evaluate, zero_shot_sentiment

    loaded, df, batches = load_workload(args)
    keep = read_keep(args.mask, loaded) if args.mask else None
    with progress_bar(args, "evaluating") as bar:
        metrics = evaluate(loaded.model, batches, keep, task=loaded.task, progress=bar)
    result = {"command": "eval", "model": loaded.model_id, "source": loaded.source, "task": loaded.task,
              "data": args.data, "split": args.split, **metrics}
    if keep is not None:
        result["mask"] = {"path": args.mask, "heads_kept": int(keep.sum()), "heads_total": int(keep.numel())}
    if args.zero_shot:
        if loaded.task != "causal-lm":
            raise ValueError("--zero-shot needs a causal language model")
        names = df.attrs.get("label_names")
        if "label" not in df.columns or not names:
            raise ValueError("--zero-shot needs data with named labels (e.g. --data tweets)")
        with progress_bar(args, "zero-shot") as bar:
            result["zero_shot"] = zero_shot_sentiment(loaded, df, labels=names, keep=keep, progress=bar)
    return result


def render_eval(result: dict) -> str:
    lines = [f"model     {result['model']} ({result['task']}, {result['source']})",
             f"data      {result['data']} [{result['split']}], {result['n']:,} examples"]
    if "mask" in result:
        lines.append(f"mask      {result['mask']['path']}: {result['mask']['heads_kept']} of "
                     f"{result['mask']['heads_total']} heads kept")
    if result["task"] == "classification":
        lines += [f"accuracy  {result['accuracy']:.4f}", f"macro-F1  {result['macro_f1']:.4f}"]
    else:
        label = "next-token accuracy" if result["task"] == "causal-lm" else "masked-token accuracy"
        lines += [f"perplexity  {result['perplexity']:.3f}", f"{label}  {result['next_token_accuracy']:.4f}",
                  f"tokens    {result['tokens']:,}"]
    lines.append(f"loss      {result['loss']:.4f}")
    if "zero_shot" in result:
        zs = result["zero_shot"]
        lines.append(f"zero-shot sentiment accuracy  {zs['accuracy']:.4f}"
                     f"{' calibrated' if zs.get('calibrated') else ''} "
                     f"(uncalibrated {zs['uncalibrated_accuracy']:.4f}; predicted "
                     f"{', '.join(f'{k} {v}' for k, v in zs['predicted'].items())})")
    lines.append(f"seconds   {result['seconds']:.1f}")
    return "\n".join(lines)


register(Command("eval", "evaluate a model on labelled data (optionally under a head mask)", build_eval, run_eval,
                 render_eval))


# ------------------------------------------------------------------------------------------ score
SCORES_SCHEMA = "headprune/scores-v1"


def write_scores(path: str, scores, *, metric: str, options: dict, model_id: str, data: dict) -> None:
    """Write a score map (L, H) as JSON atomically: schema, metric, options, model id, data, scores (NaN → null)."""
    from .atomic import atomic_write_text

    rows = [[None if value != value else float(value) for value in row] for row in scores.tolist()]
    record = {"schema": SCORES_SCHEMA, "metric": metric, "options": options, "model_id": model_id, "data": data,
              "num_layers": len(rows), "num_heads": len(rows[0]) if rows else 0, "scores": rows}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def build_score(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--metric", default="gradient",
                        help="gradient, fisher, ablation, entropy, confidence, norm, magnitude or random (default: gradient)")
    parser.add_argument("--mask", default=None, metavar="MASK.json", help="score under this mask (iterative pruning)")
    parser.add_argument("--normalise-layers", action="store_true", help="divide each layer's scores by their l2 norm")
    parser.add_argument("--global-minmax", action="store_true", help="then rescale all scores to [0, 1]")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the score cache")
    parser.add_argument("--out", default=None, metavar="SCORES.json", help="write the scores as JSON")
    add_output_args(parser)


def run_score(args: argparse.Namespace) -> dict:
    from .distributed import init, is_main, launched
    from .score import score_heads

    init()  # under torchrun: every process scores its share of the batches, the sums are all-reduced
    loaded, df, batches = load_workload(args)
    keep = read_keep(args.mask, loaded) if args.mask else None
    with progress_bar(args, f"scoring ({args.metric})") as bar:
        scores = score_heads(loaded.model, batches, args.metric, keep=keep, normalise_layers=args.normalise_layers,
                             global_minmax=args.global_minmax, seed=args.seed, progress=bar,
                             cache=not args.no_cache and not launched())
    options = {"normalise_layers": args.normalise_layers, "global_minmax": args.global_minmax, "seed": args.seed,
               "mask": args.mask}
    data = {"data": args.data, "split": args.split, "limit": args.limit, "n": len(df), "max_length": args.max_length}
    if args.out and is_main():
        write_scores(args.out, scores, metric=args.metric, options=options, model_id=loaded.model_id, data=data)
    return {"command": "score", "model": loaded.model_id, "metric": args.metric, "options": options, **data,
            "scores": scores, "out": args.out}


def render_score(result: dict) -> str:
    rows = result["scores"].tolist()
    lines = [f"model   {result['model']}", f"metric  {result['metric']} on {result['data']} [{result['split']}], "
             f"{result['n']:,} examples", "layer   " + " ".join(f"{h:>8d}" for h in range(len(rows[0])))]
    lines += [f"{layer:>5d}   " + " ".join("       -" if v != v else f"{v:8.4f}" for v in row)
              for layer, row in enumerate(rows)]
    if result["out"]:
        lines.append(f"written to {result['out']}")
    return "\n".join(lines)


register(Command("score", "score every head's importance", build_score, run_score, render_score))


# ------------------------------------------------------------------------------------------ prune
def build_prune(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.set_defaults(split="validation")
    how = parser.add_argument_group("which heads go (one of --mask, --fraction/--heads, --budget)")
    how.add_argument("--mask", default=None, metavar="MASK.json", help="remove the heads this mask drops")
    how.add_argument("--metric", default="gradient", help="score to rank heads by (default: gradient)")
    how.add_argument("--fraction", type=float, default=None, help="remove this fraction of all heads, least important first")
    how.add_argument("--heads", type=int, default=None, metavar="N", help="remove N heads, least important first")
    how.add_argument("--budget", type=float, default=None, metavar="POINTS",
                     help="remove as many heads as possible losing at most POINTS of accuracy on --split (default validation)")
    how.add_argument("--iterative", type=float, default=None, metavar="STEP",
                     help="rank heads by iterative pruning: re-score under the mask after every STEP fraction removed")
    how.add_argument("--until", type=float, default=None, metavar="FRACTION",
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
    how.add_argument("--calib-split", default=None, metavar="SPLIT",
                     help="--recover: calibrate on this split of --data (e.g. train; default: --split, the data "
                          "the budget is judged on, which makes the judgement optimistic)")
    how.add_argument("--min-heads-per-layer", type=int, default=1, help="heads every layer keeps (default: 1)")
    how.add_argument("--unit-mode", default="head", choices=["head", "group-equal", "kv-group"],
                     help="grouped-query attention: prune heads, equal heads per KV group, or whole KV groups")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the pruned model (load with load_pruned)")
    parser.add_argument("--mask-out", default=None, metavar="MASK.json", help="also write the mask used")
    add_output_args(parser)


def run_prune(args: argparse.Namespace) -> dict:
    from .arch import head_grid, parameter_count
    from .mask import mask_to_dict, write_mask
    from .prune import prune, save_pruned
    from .recover import lsq_recover

    chosen = [flag for flag, value in (("--mask", args.mask), ("--fraction", args.fraction), ("--heads", args.heads),
                                       ("--budget", args.budget)) if value is not None]
    if len(chosen) != 1:
        raise ValueError("say which heads to remove with exactly one of --mask, --fraction, --heads or --budget"
                         + (f" (got {', '.join(chosen)})" if chosen else ""))
    if args.fraction is not None and not 0 <= args.fraction <= 1:
        raise ValueError(f"--fraction must lie in [0, 1], got {args.fraction}")
    if args.budget is not None and args.budget < 0:
        raise ValueError(f"--budget is the accuracy points you accept to lose, ≥ 0; got {args.budget}")
    if args.iterative is not None and not 0 < args.iterative <= 1:
        raise ValueError(f"--iterative is the fraction of heads removed per round, in (0, 1]; got {args.iterative}")
    if args.iterative is not None and args.mask:
        raise ValueError("--iterative ranks heads by a metric; it does not apply to --mask")
    if args.until is not None and (args.iterative is None or args.budget is None):
        raise ValueError("--until bounds the iterative ranking of a --budget search; add --iterative STEP --budget POINTS")
    if args.until is not None and not 0 < args.until <= 1:
        raise ValueError(f"--until is a fraction of all heads in (0, 1]; got {args.until}")
    if args.greedy and args.budget is None:
        raise ValueError("--greedy refines a --budget search; add --budget POINTS")
    if args.calib_split is not None and args.recover is None:
        raise ValueError("--calib-split is the data --recover calibrates on; add --recover")
    loaded, df, batches = load_workload(args)
    calib = batches
    if args.recover is not None and args.calib_split is not None:
        calib = split_batches(args, loaded, args.calib_split, args.limit)[1]
    model, info = loaded.model, {}
    if args.mask:
        keep = read_keep(args.mask, loaded)
    else:
        from .score import score_heads
        from .search import budget_mask, iterative_scores, least_important

        layers, heads = head_grid(model)
        with progress_bar(args, f"scoring ({args.metric}{', iterative' if args.iterative else ''})") as bar:
            if args.iterative is None:
                scores = score_heads(model, batches, args.metric, seed=args.seed, progress=bar)
            else:
                until = (args.until or 1.0) if args.budget is not None else (
                    args.fraction if args.heads is None else min(1.0, args.heads / (layers * heads)))
                scores = iterative_scores(model, batches, args.metric, step=args.iterative, until=until,
                                          min_heads_per_layer=args.min_heads_per_layer, unit_mode=args.unit_mode,
                                          progress=bar)
        if args.budget is not None:
            with progress_bar(args, "searching") as bar:
                keep, info = budget_mask(model, batches, scores, max_drop=args.budget / 100, greedy=args.greedy,
                                         recover_batches=calib if args.recover else None,
                                         recover_method=args.recover or "weights",
                                         recover_target=args.recover_target,
                                         min_heads_per_layer=args.min_heads_per_layer, unit_mode=args.unit_mode,
                                         progress=bar)
        else:
            n = args.heads if args.heads is not None else round(args.fraction * layers * heads)
            keep = least_important(scores, n, model=model, min_heads_per_layer=args.min_heads_per_layer,
                                   unit_mode=args.unit_mode)
    recovery = info.get("recovery")
    if args.recover and recovery is None and not bool(keep.all()):
        with progress_bar(args, f"least-squares recovery ({args.recover})") as bar:
            recovery = lsq_recover(model, keep, calib, method=args.recover, target=args.recover_target,
                                   progress=bar)
    pruned = prune(recovery.bake(model) if recovery is not None else model, keep)
    how = {"mask": args.mask, "metric": None if args.mask else args.metric, "fraction": args.fraction,
           "heads": args.heads, "budget_points": args.budget, "iterative_step": args.iterative,
           "recovered": None if recovery is None else recovery.method,
           "recover_target": None if recovery is None else recovery.target,
           "calib_split": None if recovery is None else (args.calib_split or args.split),
           "data": args.data, "split": args.split}
    meta = {"source_model": loaded.model_id, "pruned_by": "headprune prune", **how}
    save_pruned(pruned, args.out, loaded.tokenizer, meta={**meta, "mask": mask_to_dict(keep, model, model_id=loaded.model_id)})
    if args.mask_out:
        write_mask(args.mask_out, keep, model, model_id=loaded.model_id, meta=meta)
    return {"command": "prune", "model": loaded.model_id, "out": args.out, "heads_kept": int(keep.sum()),
            "heads_total": int(keep.numel()), "parameters_before": parameter_count(model),
            "parameters_after": parameter_count(pruned), **how,
            "search": {k: v for k, v in info.items() if k != "recovery"}}


def render_prune(result: dict) -> str:
    lines = [f"model       {result['model']}",
             f"heads kept  {result['heads_kept']} of {result['heads_total']}",
             f"parameters  {result['parameters_before']:,} → {result['parameters_after']:,}"]
    if result["search"]:
        lines.append("search      " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in result["search"].items()))
    if result["recovered"]:
        lines.append(f"recovered   least squares ({result['recovered']}, {result['recover_target']} target), "
                     f"calibrated on {result['calib_split']}")
    lines.append(f"saved to    {result['out']} (headprune.load_pruned, or --model {result['out']})")
    return "\n".join(lines)


register(Command("prune", "remove heads physically and save the smaller model", build_prune, run_prune, render_prune))


# --------------------------------------------------------------------------------------- finetune
def build_finetune(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.set_defaults(split="train")
    parser.add_argument("--mask", required=True, metavar="MASK.json", help="the heads to keep (the model is pruned to it)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the fine-tuned pruned model")
    train = parser.add_argument_group("training")
    train.add_argument("--distill", action=argparse.BooleanOptionalAction, default=True,
                       help="distil from the dense model (default: on)")
    train.add_argument("--temperature", type=float, default=2.0, help="distillation temperature (default: 2)")
    train.add_argument("--alpha", type=float, default=0.5, help="distillation share of the loss (default: 0.5)")
    train.add_argument("--epochs", type=_positive_int, default=1, help="passes over the training data (default: 1)")
    train.add_argument("--max-steps", type=_positive_int, default=None, help="stop after this many optimizer steps")
    train.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default: 5e-5)")
    train.add_argument("--grad-accum", type=_positive_int, default=1, help="batches per optimizer step and process")
    train.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights, merged at the end")
    train.add_argument("--lora-rank", type=_positive_int, default=8, help="LoRA rank (default: 8)")
    train.add_argument("--checkpoint-dir", default=None, metavar="DIR", help="where checkpoints go (default: OUT.checkpoints)")
    train.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N", help="save a checkpoint every N steps")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    train.add_argument("--eval-limit", type=_positive_int, default=None, metavar="N",
                       help="evaluate before/after on a seeded sample of N validation and test examples")
    train.add_argument("--no-eval", action="store_true", help="skip the evaluations before and after")
    add_output_args(parser)


def run_finetune(args: argparse.Namespace) -> dict:
    import signal
    import threading

    from .distributed import init, is_main
    from .finetune import recover
    from .prune import prune, save_pruned

    init()
    loaded, df, train_batches = load_workload(args)
    keep = read_keep(args.mask, loaded)
    evals = {}
    if not args.no_eval:
        for split in ("validation", "test"):
            evals[split] = split_batches(args, loaded, split, args.eval_limit)[1]
    checkpoint_dir = args.checkpoint_dir or f"{os.path.normpath(args.out)}.checkpoints"
    stop = threading.Event()

    def on_interrupt(signum, frame):  # first Ctrl-C: checkpoint after this step and stop; second: abort now
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nheadprune: stopping after this step and saving a checkpoint (Ctrl-C again to abort)", file=sys.stderr)

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_interrupt) if in_main_thread else None
    try:
        with progress_bar(args, "fine-tuning") as bar:
            model, report = recover(
                prune(loaded.model, keep), train_batches, teacher=loaded.model, distill=args.distill,
                temperature=args.temperature, alpha=args.alpha, epochs=args.epochs, max_steps=args.max_steps,
                lr=args.lr, lora=args.lora, lora_rank=args.lora_rank, grad_accum=args.grad_accum, seed=args.seed,
                checkpoint_dir=checkpoint_dir, checkpoint_every=args.checkpoint_every, resume=args.resume,
                should_stop=stop.is_set, progress=bar, val_batches=evals.get("validation"),
                test_batches=evals.get("test"))
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
    if report["stopped"]:
        if is_main():
            print(f"headprune: interrupted at step {report['steps']}; checkpoint saved in {report['checkpoint']}; "
                  "run the same command with --resume to continue", file=sys.stderr)
        raise KeyboardInterrupt
    summary = {k: report[k] for k in ("steps", "start_step", "train_seconds", "seconds", "final_loss", "before",
                                      "after", "dense", "settings", "heads_kept", "parameters", "world_size",
                                      "resumed_from")}
    if is_main():
        meta = {"source_model": loaded.model_id, "mask": args.mask, "fine_tuned_by": "headprune finetune",
                "data": args.data, "split": args.split,
                **{k: summary[k] for k in ("steps", "settings", "before", "after", "dense")}}
        save_pruned(model, args.out, loaded.tokenizer, meta=_jsonable(meta))
    return {"command": "finetune", "model": loaded.model_id, "out": args.out, "checkpoint_dir": checkpoint_dir,
            **summary}


def render_finetune(result: dict) -> str:
    lines = [f"model       {result['model']} → {result['out']} ({result['heads_kept']} heads, "
             f"{result['parameters']:,} parameters)",
             f"training    {result['steps']} steps in {result['train_seconds']:.1f} s"
             + (f" (resumed at step {result['start_step']})" if result["start_step"] else "")
             + f", final loss {result['final_loss']:.4f}"]
    for split in ("val", "test"):
        cells = [f"{label} {result[key][split]['accuracy']:.4f}" for key, label in
                 (("dense", "dense"), ("before", "pruned"), ("after", "fine-tuned")) if split in result[key]]
        if cells:
            lines.append(f"{split + ' accuracy':<12}" + " · ".join(cells))
    return "\n".join(lines)


register(Command("finetune", "recover a pruned model's accuracy by fine-tuning (with distillation)", build_finetune,
                 run_finetune, render_finetune))


# ------------------------------------------------------------------------------------------ roles
def build_roles(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--max-examples", type=_positive_int, default=64, help="examples to average over (default: 64)")
    add_output_args(parser)


def run_roles(args: argparse.Namespace) -> dict:
    from .roles import head_roles

    loaded, df, batches = load_workload(args)
    table = head_roles(loaded.model, batches, max_examples=args.max_examples)
    return {"command": "roles", "model": loaded.model_id, "roles": table.to_dict(orient="records")}


def render_roles(result: dict) -> str:
    lines = [f"model  {result['model']}", f"{'layer':>5} {'head':>4}  {'role':<15} {'statistic':<28} value"]
    lines += [f"{r['layer']:>5} {r['head']:>4}  {r['role']:<15} {r['statistic']:<28} {r['value']:.3f}"
              for r in result["roles"]]
    return "\n".join(lines)


register(Command("roles", "tag heads with their attention roles (positional, sink, broad, ...)", build_roles, run_roles,
                 render_roles))


# ----------------------------------------------------------------------------------------- curves
def build_curves(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--metric", default="gradient", help="score to prune by (default: gradient)")
    parser.add_argument("--mode", default="one-shot", choices=["one-shot", "iterative"])
    parser.add_argument("--step", type=float, default=0.1, help="iterative: fraction of heads removed per round")
    parser.add_argument("--stop-below", type=float, default=None, metavar="RATIO",
                        help="stop once accuracy falls below RATIO × dense (e.g. 0.9, HF bertology's masking threshold)")
    parser.add_argument("--fractions", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
                        help="comma-separated fractions of heads removed")
    parser.add_argument("--random-seeds", type=int, default=3, help="random-order baseline seeds (0: none)")
    add_output_args(parser)


def run_curves(args: argparse.Namespace) -> dict:
    from .search import prune_curve, random_baseline

    try:
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    except ValueError:
        raise ValueError(f"--fractions must be comma-separated numbers, got {args.fractions!r}") from None
    if args.stop_below is not None and not 0 <= args.stop_below <= 1:
        raise ValueError(f"--stop-below is a fraction of the dense accuracy in [0, 1], got {args.stop_below}")
    loaded, df, batches = load_workload(args)
    with progress_bar(args, f"curve ({args.metric}, {args.mode})") as bar:
        curve = prune_curve(loaded.model, batches, args.metric, fractions, mode=args.mode, step=args.step,
                            stop_below=args.stop_below, progress=bar)
    result = {"command": "curves", "model": loaded.model_id, "metric": args.metric, "mode": args.mode,
              "curve": curve.to_dict(orient="records"), "random": None}
    if args.random_seeds > 0:
        with progress_bar(args, "random baseline") as bar:
            baseline = random_baseline(loaded.model, batches, fractions, seeds=range(args.random_seeds), progress=bar)
        result["random"] = baseline.to_dict(orient="records")
    return result


def render_curves(result: dict) -> str:
    random = {row["fraction"]: row for row in result["random"] or []}
    lines = [f"model  {result['model']}, {result['metric']} ({result['mode']})",
             f"{'removed':>8} {'heads':>6} {'accuracy':>9} {'loss':>8}" + ("  random (min–max)" if random else "")]
    for row in result["curve"]:
        line = f"{row['fraction']:>8.0%} {row['heads_kept']:>6} {row['accuracy']:>9.4f} {row['loss']:>8.4f}"
        if row["fraction"] in random:
            r = random[row["fraction"]]
            line += f"  {r['mean']:.4f} ({r['low']:.4f}–{r['high']:.4f})"
        lines.append(line)
    return "\n".join(lines)


register(Command("curves", "accuracy vs fraction of heads removed, against random orders", build_curves, run_curves,
                 render_curves))


# ------------------------------------------------------------------------------------------ bench
def bench_dir():
    """The source checkout's bench/ folder (benchmarks are scripts beside the package, not installed with it)."""
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "bench"


def build_bench(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="prune-speed, score-speed, whatif-speed, recovery, ... (a script in bench/)")
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="options passed to the script (e.g. --out FILE)")
    add_output_args(parser)


def run_bench(args: argparse.Namespace) -> dict:
    import subprocess

    folder = bench_dir()
    available = sorted(p.stem.replace("_", "-") for p in folder.glob("*.py")) if folder.is_dir() else []
    script = folder / f"{args.name.replace('-', '_')}.py"
    if not script.is_file():
        if not folder.is_dir():
            raise ValueError(f"no bench/ folder beside the package ({folder}); run from a source checkout")
        raise ValueError(f"no benchmark {args.name!r}; available: {', '.join(available) or 'none'}")
    rest = [a for a in args.bench_args if a != "--"]
    done = subprocess.run([sys.executable, str(script), *rest], stdout=sys.stderr if args.json else None)
    if done.returncode != 0:
        raise RuntimeError(f"bench/{script.name} failed with exit code {done.returncode}")
    result = {"command": "bench", "name": args.name, "script": str(script), "returncode": done.returncode}
    if "--out" in rest and rest.index("--out") + 1 < len(rest):
        out = rest[rest.index("--out") + 1]
        result["out"] = out
        with contextlib.suppress(OSError, ValueError):
            with open(out, encoding="utf-8") as fh:
                result["result"] = json.load(fh)
    return result


register(Command("bench", "run a benchmark script from bench/ (prints its table, writes its JSON)", build_bench,
                 run_bench, lambda result: f"benchmark {result['name']} finished"
                 + (f"; results in {result['out']}" if result.get("out") else "")))


# ------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headprune", description="Find, test and remove redundant attention heads in Transformer models.")
    parser.add_argument("--verbose", "-v", action="store_true", help="show library warnings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        command.build(sub.add_parser(command.name, help=command.help, description=command.help))
    return parser


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # tensors, numpy
        return _jsonable(value.tolist())
    return value


def _error_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return text


def main(argv: list[str] | None = None) -> int:
    """Console entry point: `headprune COMMAND ...`; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    command = COMMANDS[args.command]
    if not args.verbose:
        with contextlib.suppress(ImportError):
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
    stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stray prints never corrupt --json output
            result = command.run(args)
    except KeyboardInterrupt:
        print("headprune: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        if os.environ.get("HEADPRUNE_DEBUG"):
            traceback.print_exc()
        print(f"headprune: error: {_error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if os.environ.get("HEADPRUNE_DEBUG"):
            traceback.print_exc()
        print(f"headprune: error: {type(exc).__name__}: {_error_line(exc)} (HEADPRUNE_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_FAILED
    from .distributed import is_main

    if not is_main():  # under torchrun / accelerate launch only rank 0 prints the result
        return EXIT_OK
    if getattr(args, "json", False):
        stdout.write(json.dumps(_jsonable(result)) + "\n")
    elif command.render is not None:
        stdout.write(command.render(result) + "\n")
    else:
        stdout.write(json.dumps(_jsonable(result), indent=2) + "\n")
    stdout.flush()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
