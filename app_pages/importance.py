"""Importance: which heads matter, by several metrics; how far the metrics agree; what a head attends to."""
from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from app_pages import _ui as ui
from headprune.figures import (
    attention_figure,
    attention_mean_explainer_figure,
    correlation_figure,
    head_grid_figure,
    small_multiples_figure,
)
from headprune.model import layout
from headprune.model.schema import scores_from_dict
from headprune.scoring.agreement import rank_heads

bench = ui.bench()
w = ui.workload()
model = w.model
L, H = w.shape
group = layout.kv_group_size(model)
ss = st.session_state

st.title("Head importance")
metrics = ui.metric_names()
c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
metric = c1.selectbox("metric", metrics, index=metrics.index(ui.DEFAULT_METRIC), key="imp_metric",
                      help="\n".join(f"- **{m}**: {ui.metric_description(m)}" for m in metrics))
per_layer = c2.toggle("normalise per layer", key="imp_norm_layers",
                      help="Divide each layer's scores by their ℓ2 norm (Michel et al. 2019)")
global_mm = c3.toggle("global min-max", key="imp_minmax", help="Then scale all scores to [0, 1] (HF bertology)")
intervals = c4.toggle("rank intervals", key="imp_boot",
                      help="Bootstrap the examples 20 times: how stable is each head's rank?")
st.caption(ui.metric_description(metric))
options = {"normalise_layers": per_layer, "global_minmax": global_mm}


scores = ui.stored_scores(metric, **options)
roles = bench.roles(only_stored=True)
boot = bench.bootstrap(metric, only_stored=True)


def score_job(progress, should_stop, metric=metric, options=options):
    """Scores of the chosen metric, then the role tags (cheap; one attention pass on 64 examples)."""
    result = bench.score(metric, progress=lambda f, m: progress(0.8 * f, m), **options)
    progress(0.85, "tagging head roles")
    bench.roles()
    return result


job = ui.job("importance")
if scores is None and job.snapshot()["status"] != "running":
    ui.start_job("importance", score_job)  # the first visit scores by itself: the heatmap is the point of the page
ui.job_panel("importance", label=f"Scoring heads by {metric}")

if intervals and boot is None and ui.job("bootstrap").snapshot()["status"] != "running":
    ui.start_job("bootstrap", lambda progress, should_stop, metric=metric: bench.bootstrap(metric, progress=progress))
if intervals:
    ui.job_panel("bootstrap", label="Bootstrapping rank intervals")

with st.expander("Open a scores file written by `headprune score --out`"):
    upload = st.file_uploader("scores JSON", type=["json"], key="scores_upload")
    try:
        obj = ui.new_json_upload(upload, "scores_upload_done")
        if obj is not None:
            record = bench.adopt_scores(scores_from_dict(obj, model, model_id=w.loaded.model_id))
            st.success(f"Opened {upload.name}: {record.metric} scores ({record.data.get('n', '?')} examples of "
                       f"{record.data.get('data', '?')}). Pick `{record.metric}` above to see them.")
    except Exception as exc:
        ui.error(f"{upload.name} was not opened", exc)


# ------------------------------------------------------------------------------------------ heatmap
def hover_texts(values: np.ndarray) -> np.ndarray:
    """Per head: rank (1 = most important; ties share their average rank, as everywhere in headprune), bootstrap
    interval, role tags."""
    order = rank_heads(torch.from_numpy(values)).numpy()
    scored = int(np.isfinite(values).sum())
    texts = np.empty(values.shape, dtype=object)
    tags: dict[tuple[int, int], list[str]] = {}
    if roles is not None and len(roles):
        for row in roles.itertuples():
            tags.setdefault((int(row.layer), int(row.head)), []).append(f"{row.role} ({row.value:.2f})")
    for layer in range(L):
        for head in range(H):
            parts = [f"rank {order[layer, head]:g} of {scored}" if np.isfinite(values[layer, head]) else "not scored"]
            if boot is not None:
                low, high = float(boot["low"][layer, head]), float(boot["high"][layer, head])
                if np.isfinite(low):
                    parts.append(f"90% rank interval {low:.0f}–{high:.0f}"
                                 + (" (unstable)" if bool(boot["uncertain"][layer, head]) else ""))
            parts.append("roles: " + ", ".join(tags[(layer, head)]) if (layer, head) in tags else "roles: none")
            texts[layer, head] = "<br>".join(parts)
    return texts


selected = ss.get("imp_selected", (0, 0))
with st.container():
    if scores is None:
        st.info("The heatmap appears as soon as the scores are computed.")
    else:
        values = ui.as_numpy(scores)
        fixed = (0.0, 1.0) if global_mm else (None, None)
        st.markdown(f"**`{metric}` importance per head** · brighter = more important")
        fig = head_grid_figure(values, None, hover=hover_texts(values), kv_group_size=group if group > 1 else None,
                               score_label=metric, zmin=fixed[0], zmax=fixed[1])
        event = st.plotly_chart(fig, key="imp_grid", on_select="rerun", selection_mode=("points",), width="content",
                                config={"displayModeBar": False})
        points = event.selection.points if event is not None else []
        if points and points[0].get("customdata"):
            selected = tuple(int(v) for v in points[0]["customdata"][:2])
            ss["imp_selected"] = selected
        st.caption("Hover a head for its rank, rank interval and role tags; click it to see its attention pattern. "
                   + (f"Query heads are grouped under their {H // group} KV heads." if group > 1 else ""))

# ------------------------------------------------------------------------------------------ one head
layer, head = selected
st.subheader(f"Layer {layer}, head {head}")
left, right = st.columns([3, 2], gap="large")
with left:
    texts = w.df["text"].astype(str).tolist()[:100]
    choice = st.selectbox("example", range(len(texts)), format_func=lambda i: f"{i}: {texts[i][:70]}", key="imp_example")
    try:
        weights, tokens = bench.attention_pattern(choice, layer, head)
        st.plotly_chart(attention_figure(weights, tokens, title=f"attention of layer {layer}, head {head}"),
                        key="imp_attention", config={"displayModeBar": False})
    except Exception as exc:
        ui.error("Could not draw the attention pattern", exc)
with right:
    if roles is not None:
        mine = roles[(roles["layer"] == layer) & (roles["head"] == head)]
        if len(mine):
            st.markdown("**Role tags**: " + " · ".join(f"`{r.role}` ({r.statistic}: {r.value:.2f})" for r in mine.itertuples()))
        else:
            st.markdown("**Role tags**: none (no positional, sink, self or broad pattern stands out)")

# ------------------------------------------------------------------------------------------ metrics side by side
st.divider()
st.subheader("Do the metrics agree?")
choices = st.multiselect("metrics to compare", metrics,
                         default=[m for m in ("gradient", "fisher", "ablation", "entropy", "confidence", "norm", "magnitude", "random")
                                  if m in metrics], key="imp_compare")
compared = bench.compare(list(choices), only_stored=True)
if st.button("Score and compare", disabled=len(choices) < 2):
    ui.start_job("compare", lambda progress, should_stop, choices=tuple(choices): bench.compare(list(choices),
                                                                                             progress=progress))
    st.rerun()
ui.job_panel("compare", label="Scoring and comparing metrics")
if compared is not None:
    maps = {m: ui.as_numpy(compared["maps"][m]) for m in choices}
    st.plotly_chart(small_multiples_figure(maps, cols=min(4, len(maps))), key="imp_multiples")
    a, b = st.columns([3, 2], gap="large")  # the correlations below the maps, wide enough to read every number
    a.plotly_chart(correlation_figure(compared["corr"]["spearman"]), key="imp_corr")
    b.caption("Each map is min-max scaled on its own. Spearman rank correlation over the heads every metric scored: "
              "1 = same order, 0 = unrelated, NaN = the metric gives no order at all.")

    st.subheader("A metric that cannot work: attention_mean")
    st.markdown(ui.metric_description("attention_mean"))
    other = next((m for m in choices if m != "random"), choices[0])
    st.plotly_chart(attention_mean_explainer_figure(ui.as_numpy(compared["maps"]["attention_mean"]), maps[other], other),
                    key="imp_explainer")
