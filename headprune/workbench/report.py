"""A self-contained HTML report of one mask over a workload: one file that opens offline in any browser.

plotly.js is embedded once in the head (no CDN, no network request); every figure is a `headprune.figures`
builder drawn with its hover intact. Sections: model and data, before / after metrics and costs, the mask
grid, the importance heatmaps of every metric computed on the workload, the pruning curves if computed, the
examples that flipped or moved (with the tokens that moved, for language models), the reproducibility record
(the mask file, downloadable from the report) and the exact CLI commands that reproduce it. The numbers are
also in a `<script type="application/json" id="headprune-report-data">` block, for tools and tests.
`<meta name="generator" content="headprune ...">` marks the file as headprune's own report
(`headprune.core.files.REPORT`), so `check_output` lets `--overwrite` replace it and nothing else.
"""
from __future__ import annotations

import base64
import datetime
import html
import json
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..core.files import atomic_write_text
from ..core.records import jsonable
from ..core.versions import __version__
from ..figures import curves_figure, head_grid_figure, token_changes_html
from ..model.layout import kv_group_size
from ..model.schema import ScoreRecord, mask_to_dict
from .workload import DATA_OPTIONS, Workload

if TYPE_CHECKING:
    from .bench import Workbench

GENERATOR = f"headprune {__version__}"
PLOT_CONFIG = {"displaylogo": False, "responsive": False, "modeBarButtonsToRemove": ["toImage"]}
MAX_FLIPS = 100  # flipped examples listed per kind (the counts are exact)
STYLE = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222}h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;
vertical-align:top}th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}.note{color:#666;font-size:.9em}"""


def _esc(value) -> str:
    return html.escape(str(value))


def _table(header: Sequence[str] | None, rows: Sequence[Sequence], numeric: Sequence[int] = ()) -> str:
    head = "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{_esc(v)}</td>'
                                    for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _figure(fig) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG)


def _scores_file(record: ScoreRecord) -> str:
    flags = "".join(f"-{k}" for k in ("normalise_layers", "global_minmax") if record.options.get(k))
    return f"scores-{record.metric}{flags.replace('_', '-')}.json"


def report_commands(workload: Workload, scores: Sequence[ScoreRecord], *, mask_file: str = "mask.json",
                    out: str = "report.html") -> list[str]:
    """The CLI commands that recompute this report's numbers on the same examples (same data sample, batching
    and length): score files for each metric shown, the evaluation, the report itself and the pruned model."""
    s = workload.settings
    args = ["--model", workload.loaded.model_id, "--data", workload.data_spec]
    args += ["--split", workload.split] if workload.split else []
    args += ["--limit", str(s["limit"])] if s.get("limit") else []
    args += ["--seed", str(s["seed"]), "--batch-size", str(s["batch_size"]), "--max-length", str(s["max_length"])]
    for option in DATA_OPTIONS:
        if s.get(option):
            args += ["--" + option.replace("_", "-"), str(s[option])]
    base = " ".join(shlex.quote(a) for a in args)
    lines = []
    for record in scores:
        flags = "".join(f" --{k.replace('_', '-')}" for k in ("normalise_layers", "global_minmax") if record.options.get(k))
        lines.append(f"headprune score {base} --metric {shlex.quote(record.metric)}{flags} "
                     f"--out {shlex.quote(_scores_file(record))}")
    lines.append(f"headprune eval {base} --mask {shlex.quote(mask_file)}")
    lines.append(f"headprune report {base} --mask {shlex.quote(mask_file)}"
                 + "".join(f" --scores {shlex.quote(_scores_file(r))}" for r in scores) + f" --out {shlex.quote(out)}")
    lines.append(f"headprune prune --model {shlex.quote(workload.loaded.model_id)} --mask {shlex.quote(mask_file)} "
                 "--out pruned-model")
    return lines


def _metrics_section(bench: Workbench, keep: torch.Tensor) -> tuple[str, dict]:
    """Before / after table and its numbers."""
    dense, after = bench.dense, bench.exact(keep)
    rows = {"dense": bench.summary(), "mask": bench.summary(keep)}
    label = "accuracy" if dense.task == "classification" else "next-token accuracy"
    second = ("macro-F1", "macro_f1") if dense.task == "classification" else ("perplexity", "perplexity")
    table = [(label, f"{dense['accuracy']:.2%}", f"{after['accuracy']:.2%}"),
             (second[0], f"{dense[second[1]]:.4f}", f"{after[second[1]]:.4f}"),
             ("loss", f"{dense['loss']:.4f}", f"{after['loss']:.4f}")]
    table += [(name, fmt(rows["dense"][k]), fmt(rows["mask"][k])) for name, k, fmt in (
        ("heads kept", "heads_kept", str), ("FLOPs / token", "flops_per_token", lambda v: f"{v / 1e6:.2f} M"),
        ("parameters", "params", lambda v: f"{v / 1e6:.2f} M"),
        ("KV cache / token", "kv_cache_bytes_per_token", lambda v: f"{v / 1024:.1f} KiB"),
        ("latency (median, measured)", "latency_ms", lambda v: "not measured" if v is None else f"{v:.1f} ms"))]
    numbers = {"dense": {**dense.to_dict(), **rows["dense"].to_dict()}, "mask": {**after.to_dict(), **rows["mask"].to_dict()}}
    body = _table(["", "dense", "this mask"], table, numeric=(1, 2))
    body += f'<p class="note">On {after.n} examples; the mask removes {int((~keep).sum())} of {keep.numel()} heads.</p>'
    return body, numbers


def _examples_section(bench: Workbench, keep: torch.Tensor) -> tuple[str, dict]:
    """Flipped examples (classification) or loss movers with token changes (language models)."""
    changes = bench.what_changed(None, keep)
    numbers = {kind: [f.index for f in changes[kind]] for kind in ("fixed", "broken", "changed")}
    numbers["loss_movers"] = [[m.index, m.before, m.after] for m in changes.loss_movers]
    parts = []
    if changes.task == "classification":
        parts.append(f"<p><b>{len(changes.fixed)} fixed</b> (wrong before, right now), <b>{len(changes.broken)} "
                     f"broken</b> (right before, wrong now), {len(changes.changed)} other flips, of {changes.n} "
                     "examples.</p>")
        for kind, flips in (("Broken", changes.broken), ("Fixed", changes.fixed), ("Other flips", changes.changed)):
            if flips:
                parts.append(f"<h3>{kind} ({len(flips)})</h3>" + _table(
                    ["#", "text", "gold", "prediction", "P(gold)"],
                    [(f.index, f.text, f.label, f"{f.before} → {f.after}",
                      f"{f.gold_prob_before:.2f} → {f.gold_prob_after:.2f}") for f in flips[:MAX_FLIPS]]))
        parts.append("<h3>Loss moved most</h3>" + _table(["#", "text", "loss before", "loss after"], [
            (m.index, m.text, f"{m.before:.3f}", f"{m.after:.3f}") for m in changes.loss_movers], numeric=(2, 3)))
    else:
        parts.append('<p class="note">The examples whose loss moved most; red tokens became less likely, green '
                     "more likely (hover for the change in nats).</p>")
        scale = max((abs(t.delta) for m in changes.loss_movers for t in m.tokens if np.isfinite(t.delta)), default=1.0)
        for m in changes.loss_movers:
            tokens = token_changes_html([t.token for t in m.tokens], [t.delta for t in m.tokens], scale=scale)
            parts.append(f"<p><b>#{m.index}</b> loss {m.before:.3f} → {m.after:.3f}<br>{tokens}</p>")
    return "".join(parts), numbers


def _figures_sections(bench: Workbench, keep: torch.Tensor, scores: Sequence[ScoreRecord]) -> list[tuple[str, str]]:
    """(title, html) of the mask grid, the importance heatmaps and the pruning curves computed."""
    w = bench.workload
    group = kv_group_size(w.model)
    group = group if group > 1 else None
    shown = scores[0] if scores else None
    grid = head_grid_figure(shown.scores.numpy() if shown else np.full(w.shape, np.nan), keep.numpy(),
                            kv_group_size=group, score_label=shown.metric if shown else "score")
    out = [("Mask", "<p class='note'>Removed heads are crossed out" + (f"; colour: importance by {_esc(shown.metric)}"
                                                                      if shown else "") + ".</p>" + _figure(grid))]
    if scores:
        maps = "".join(f"<h3>{_esc(r.metric)}</h3>" + _figure(head_grid_figure(
            r.scores.numpy(), kv_group_size=group, score_label=r.metric)) for r in scores)
        out.append(("Importance", maps))
    curves = [value for _, value in w.store.items("curves")]
    if curves:
        total = keep.numel()
        y = "accuracy"
        point = (1 - int(keep.sum()) / total, bench.exact(keep)[y])
        out.append(("Pruning curves", "".join(_figure(curves_figure(c["curves"], baseline=c["baseline"], current=point,
                                                                    dense_accuracy=bench.dense[y], y=y))
                                              for c in curves)))
    return out


def _reproduce_section(mask_file: str, mask_json: str, commands: Sequence[str]) -> str:
    """The mask file as a download link (a data URI: no network) and shown, then the commands."""
    link = base64.b64encode(mask_json.encode()).decode()
    return (f'<p>Save the mask as <a download="{_esc(mask_file)}" href="data:application/json;base64,{link}">'
            f"{_esc(mask_file)}</a>, then:</p><pre>{_esc(chr(10).join(commands))}</pre><details><summary>The mask "
            f"file (with its reproducibility record)</summary><pre>{_esc(mask_json)}</pre></details>")


def build_report(bench: Workbench, keep, *, mask_file: str = "mask.json", out: str = "report.html",
                 versions: dict | None = None) -> str:
    """The report of mask `keep` over `bench`'s workload, as one HTML text (see the module docstring)."""
    import plotly.offline

    w = bench.workload
    keep = torch.as_tensor(keep).bool()
    scores = [record for key, record in w.store.items("scores") if key[2] is None]
    metrics_html, numbers = _metrics_section(bench, keep)
    examples_html, flips = _examples_section(bench, keep)
    record = bench.mask_record(keep, after=bench.exact(keep), latency=bench.measured_for(keep), versions=versions)
    mask_json = json.dumps(jsonable(mask_to_dict(keep, w.model, model_id=w.loaded.model_id, meta=record)), indent=2)
    commands = report_commands(w, scores, mask_file=mask_file, out=out)
    layers, heads = w.shape
    about = _table(None, [("model", w.loaded.model_id), ("task", w.loaded.task), ("family", record["model"]["family"]),
                              ("heads", f"{layers} layers × {heads} heads"),
                              ("data", f"{w.data_spec} [{w.split or 'all rows'}], {len(w.df)} examples"),
                              ("tokens per example", f"at most {w.settings['max_length']}"),
                              ("made", datetime.datetime.now().strftime("%Y-%m-%d %H:%M")), ("by", GENERATOR)])
    sections = [("Model and data", about), ("Before and after", metrics_html),
                *_figures_sections(bench, keep, scores), ("What changed, example by example", examples_html),
                ("Reproduce it", _reproduce_section(mask_file, mask_json, commands))]
    data = {"generator": GENERATOR, "model": w.loaded.model_id, "data": w.data_spec, "examples": len(w.df),
            "kept_heads": keep.tolist(), "scores": [r.metric for r in scores], **numbers, "flips": flips,
            "commands": commands}
    title = f"headprune report: {w.loaded.model_id}, {int(keep.sum())} of {keep.numel()} heads kept"
    body = "".join(f"<h2>{_esc(name)}</h2>{content}" for name, content in sections)
    payload = json.dumps(jsonable(data)).replace("</", "<\\/")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="generator" content="{GENERATOR}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_esc(title)}</title>'
            f"<style>{STYLE}</style><script type=\"text/javascript\">{plotly.offline.get_plotlyjs()}</script></head>"
            f"<body><h1>{_esc(title)}</h1>{body}"
            f'<script type="application/json" id="headprune-report-data">{payload}</script></body></html>\n')


def write_report(path, text: str):
    """Write a report atomically (check the path first with `check_output(path, "report", ...)`)."""
    return atomic_write_text(path, text)
