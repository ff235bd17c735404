"""`headprune export-onnx`: the model pruned by a mask (optionally least-squares recovered) as an ONNX file for
ONNX Runtime, checked against PyTorch on real examples and timed there dense vs pruned."""
from __future__ import annotations

import argparse

from ..core.errors import UserError
from ..deploy import LatencySettings
from ..recovery.lsq import check_feed_forward
from ..workbench.deploy import PARITY_EXAMPLES
from .common import (
    Command,
    add_model_args,
    add_output_args,
    add_overwrite_arg,
    calibration_batches,
    open_bench,
    positive_int,
    progress_bar,
    read_keep,
)

NO_KV_CACHE = "no KV cache in this first version: decoders run full-sequence forward passes (prefill), not generation"


def build(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser, default_split="validation")
    parser.add_argument("--mask", default=None, metavar="MASK.json",
                        help="remove the heads this mask drops (default: export the model as it is)")
    parser.add_argument("--out", required=True, metavar="FILE.onnx",
                        help="the ONNX file; FILE.onnx.headprune.json beside it records the kept heads and parity")
    recover = parser.add_argument_group("recovery")
    recover.add_argument("--recover", nargs="?", const="weights", default=None, choices=["weights", "scales"],
                         help="bake a least-squares recovery of the mask into the graph: refit the kept heads' output "
                              "projection (weights, the default) or rescale each kept head (scales)")
    recover.add_argument("--recover-target", default="auto", choices=["auto", "dense", "local"],
                         help="--recover: fit to the dense model's output or the dense attention on the pruned input "
                              "(auto: by architecture, as in `headprune prune`)")
    recover.add_argument("--recover-ffn", action="store_true",
                         help="--recover: refit the feed-forward outputs too (BERT-style post-norm encoders)")
    recover.add_argument("--calib-split", default=None, metavar="SPLIT",
                         help="--recover: calibrate on this split of --data (default: train when the data has splits)")
    timing = parser.add_argument_group(
        "latency check", "ONNX Runtime, dense vs pruned (both exported), on --batch-size (default 8) × --seq-len "
                         f"tokens per pass; parity is checked on the first {PARITY_EXAMPLES} examples of --data "
                         f"(default --limit {PARITY_EXAMPLES})")
    timing.add_argument("--seq-len", type=positive_int, default=128, help="tokens per timed pass (default: 128)")
    timing.add_argument("--repeats", type=positive_int, default=20, help="timed passes; medians reported (default: 20)")
    timing.add_argument("--threads", type=positive_int, default=None,
                        help="ONNX Runtime intra-op threads (default: torch's thread count)")
    timing.add_argument("--no-latency", action="store_true", help="skip the latency check (export and parity only)")
    add_overwrite_arg(parser)
    add_output_args(parser)


def outputs(args: argparse.Namespace) -> list:
    return [(args.out, "onnx", "out")]


def _check(args: argparse.Namespace) -> None:
    if args.recover and not args.mask:
        raise UserError("--recover refits the heads a mask keeps; add --mask MASK.json")
    if args.calib_split is not None and args.recover is None:
        raise UserError("--calib-split is the data --recover calibrates on; add --recover")
    if args.recover_ffn and args.recover != "weights":
        raise UserError("--recover-ffn extends --recover weights; add --recover")


def run(args: argparse.Namespace) -> dict:
    _check(args)
    bench = open_bench(args, limit=args.limit or PARITY_EXAMPLES)
    if args.recover_ffn:
        check_feed_forward(bench.model, args.recover_target, option="recover_ffn")
    keep = read_keep(args.mask, bench) if args.mask else None
    recovery = None
    if args.recover and not bool(keep.all()):
        calib, split = calibration_batches(args, bench)
        with progress_bar(args, f"least-squares recovery ({args.recover})") as bar:
            recovery = bench.recover(keep, args.recover, target=args.recover_target, calib=(calib, str(split)),
                                     evaluate=False, feed_forward=args.recover_ffn, progress=bar).recovery
    latency = None if args.no_latency else LatencySettings(args.batch_size or 8, args.seq_len, args.repeats,
                                                           threads=args.threads)
    with progress_bar(args, "exporting to ONNX") as bar:
        done = bench.export_onnx(keep, args.out, recovery=recovery, overwrite=args.overwrite, latency=latency,
                                 progress=bar)
    return {"command": "export-onnx", "mask": args.mask, "note": NO_KV_CACHE, **done.to_dict()}


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def render(result: dict) -> str:
    parity, heads = result["parity"], result["num_layers"] * result["num_heads"]
    per_layer = ", ".join(str(len(k)) for k in result["kept_heads"])
    lines = [f"model         {result['model_id']} ({result['family']}, {result['task']})",
             f"heads kept    {result['heads_kept']} of {heads} (per layer: {per_layer})",
             (f"wrote         {result['path']} ({_size(result['file_bytes'])}, opset {result['opset']}) and its "
              f"sidecar in {result['seconds']:.1f} s")]
    if result["recovery"]:
        also = ", feed-forward outputs too" if result["recovery"].get("feed_forward") else ""
        lines.append(f"recovered     least squares ({result['recovery']['method']}, {result['recovery']['target']} "
                     f"target{also})")
    verdict = "ok" if parity["ok"] else "FAILED (the file differs from PyTorch beyond the tolerance)"
    lines.append(f"parity        {verdict}: max |Δ logit| {parity['max_abs_diff']:.1e}, predictions agree "
                 f"{parity['agreement']:.1%} ({parity['compared']} compared; {result['meta']['parity_examples']})")
    lines.append(f"FLOP ratio    {result['flop_ratio']:.3f} (pruned / dense, {result['flop_seq_len']} tokens)")
    timed = result["latency"]
    if timed:
        s = timed["settings"]
        lines.append(f"ONNX Runtime  dense {timed['dense']['latency_ms_median']:.1f} ms → pruned "
                     f"{timed['pruned']['latency_ms_median']:.1f} ms: time ratio {timed['time_ratio']:.3f} vs FLOP ratio "
                     f"{timed['flop_ratio']:.3f} ({s['batch_size']} × {s['seq_len']} tokens, {s['threads']} threads, "
                     f"median of {s['repeats']})")
        if timed["warning"]:
            lines.append(f"warning       {timed['warning']}")
    lines.append(f"note          {result['note']}")
    return "\n".join(lines)


COMMAND = Command("export-onnx", "export the pruned model to ONNX, check it in ONNX Runtime and time it there",
                  build, run, render, outputs)
