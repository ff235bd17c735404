"""Prune-page sections about real examples: what changed (flipped examples, loss movers, the removed heads'
attention on one example), masks A / B side by side, generation side by side. Layout only: every number is a
Workbench call (`what_changed`, `responsible`, `attention_pattern`, `summary`, `generate`)."""
from __future__ import annotations

import re

import pandas as pd
import streamlit as st
import torch

from app_pages import _ui as ui
from headprune.figures import ab_grid_figure, attention_figure, token_changes_html
from headprune.model import layout
from headprune.workbench.ui_state import encode_mask

TARGETS = {"B": "B (the mask you edit)", "A": "A (the pinned mask)"}
BASES = {"dense": "the dense model", "previous": "the previous mask", "A": "the pinned mask A"}
INSPECT = "inspect_row"  # the live example whose removed heads are shown
CHEAP_SCORE_S = 5.0  # scores expected within this many seconds are computed on the Prune page's first visit


def md(text: str) -> str:
    """User text made literal for `st.markdown` (no emphasis, code, links or LaTeX from its characters)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$])", r"\\\1", str(text))


def short(text: str, n: int = 90) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def head_name(layer: int, head: int) -> str:
    return f"L{layer} H{head}"


def target_picker() -> str:
    """Where the automatic masks write: "B" (the session's mask) or "A" (the pinned one)."""
    return st.radio("write automatic masks into", list(TARGETS), format_func=TARGETS.get, horizontal=True,
                    key="auto_target", help="B is the mask you edit; A is the one pinned for comparison.")


def cheap_scores(metric: str, limit_s: float = CHEAP_SCORE_S):
    """`metric`'s scores computed now when they are expected within `limit_s` seconds (gradient on a small live
    set), else None (the page offers a button)."""
    seconds = ui.bench().score_seconds(metric)
    if seconds is None or seconds > limit_s:
        return None
    try:
        with st.spinner(f"colouring the grid by {metric} (about {seconds:.0f} s)…"):
            return ui.compute_scores(metric)
    except Exception as exc:
        ui.error(f"Could not score the heads by {metric}", exc)
        return None


def sections(keep: torch.Tensor) -> None:
    """Everything below the grid that follows the current mask."""
    what_changed(keep)
    side_by_side(keep)
    if ui.workload().loaded.task == "causal-lm":
        generation(keep)


# ------------------------------------------------------------------------------------------ what changed
def what_changed(keep: torch.Tensor) -> None:
    bench, ss = ui.bench(), st.session_state
    st.subheader("What changed")
    bases = {k: v for k, v in BASES.items() if k == "dense" or (k == "previous" and len(ui.history()))
             or (k == "A" and ui.pinned() is not None)}
    if ss.get("changed_base") not in bases:
        ss["changed_base"] = "dense"
    c1, c2 = st.columns([3, 2])
    base = c1.radio("compared with", list(bases), format_func=bases.get, horizontal=True, key="changed_base")
    recovered = bench.recovered_for(keep)
    use_recovery = recovered is not None and recovered.examples is not None and c2.checkbox(
        "after the least-squares recovery", value=True, key="changed_recovered")
    before = None if base == "dense" else ui.history().last() if base == "previous" else ui.pinned()
    try:
        changes = bench.what_changed(before, recovered if use_recovery else keep)
    except Exception as exc:
        ui.error("Could not compare the examples", exc)
        return
    if changes.task == "classification":
        flipped_table(changes, "flips", ("fixed", "wrong before, right now"), ("broken", "right before, wrong now"))
    else:
        token_view(changes)
    inspect(changes, keep)


def flipped_table(changes, key: str, fixed: tuple[str, str], broken: tuple[str, str]) -> None:
    """Counts and one table of the flipped examples (click a row to look inside it)."""
    c = st.columns(3)
    c[0].metric(fixed[0], len(changes.fixed), help=fixed[1], border=True)
    c[1].metric(broken[0], len(changes.broken), help=broken[1], border=True)
    c[2].metric("other flips", len(changes.changed), help="wrong both times, another wrong answer", border=True)
    flips = [*changes.broken, *changes.fixed, *changes.changed]
    if not flips:
        st.caption(f"No prediction changed on the {changes.n} live examples.")
    else:
        names = {"fixed": fixed[0], "broken": broken[0], "changed": "other"}
        table = pd.DataFrame([{"#": f.index, "flip": names[f.kind], "text": f.text, "gold": f.label,
                               "prediction": f"{f.before} → {f.after}",
                               "P(gold)": f"{f.gold_prob_before:.2f} → {f.gold_prob_after:.2f}"} for f in flips])
        pick_table(table, key)
    movers = pd.DataFrame([{"#": m.index, "text": m.text, "loss": f"{m.before:.3f} → {m.after:.3f}",
                            "Δ loss": round(m.delta, 3)} for m in changes.loss_movers])
    with st.expander(f"The {len(movers)} examples whose loss moved most"):
        pick_table(movers, f"{key}_movers")


def pick_table(table: pd.DataFrame, key: str) -> None:
    """A table whose clicked row (column "#": the example) becomes the example to look inside."""
    def picked():
        rows = st.session_state[key].selection.rows
        if rows:
            st.session_state[INSPECT] = int(table["#"].iloc[rows[0]])

    st.dataframe(table, hide_index=True, on_select=picked, selection_mode="single-row", key=key,
                 column_config={"text": st.column_config.TextColumn(width="large")})


def token_view(changes) -> None:
    """Language models: the loss movers with every token shaded by its log-probability change."""
    st.caption("The examples whose loss moved most. Red tokens became less likely, green ones more likely "
               "(hover a token for its change in nats).")
    if not any(m.delta for m in changes.loss_movers):
        st.caption(f"No example's loss changed on the {changes.n} live examples.")
        return
    scale = max((abs(t.delta) for m in changes.loss_movers for t in m.tokens if t.delta == t.delta), default=1.0)
    for move in changes.loss_movers[:5]:
        st.html(f"<div><b>#{move.index}</b> · loss {move.before:.3f} → {move.after:.3f} ({move.delta:+.3f})<br>"
                + token_changes_html([t.token for t in move.tokens], [t.delta for t in move.tokens], scale=scale)
                + "</div>")
    if changes.token_movers:
        with st.expander("The tokens whose log-probability moved most"):
            st.dataframe(pd.DataFrame([{"#": t.index, "token": t.token, "position": t.position,
                                        "log-prob": f"{t.before:.2f} → {t.after:.2f}", "Δ": round(t.delta, 2)}
                                       for t in changes.token_movers]), hide_index=True)


def inspect(changes, keep: torch.Tensor) -> None:
    """One example: which removed heads would help it most, and what they attend to on it (dense model)."""
    bench, ss = ui.bench(), st.session_state
    texts = {f.index: f.text for f in (*changes.broken, *changes.fixed, *changes.changed)}
    texts.update({m.index: m.text for m in changes.loss_movers if m.index not in texts})
    if bool(keep.all()) or not texts:
        return
    ss.setdefault("inspect_on", bench.toggle_seconds()[0] < 1.0)  # slow models would pay on every toggle: opt in
    if not st.toggle("Look inside an example: the removed heads that matter for it, and their attention",
                     key="inspect_on"):
        return
    if ss.get(INSPECT) not in texts:
        ss[INSPECT] = next(iter(texts))
    row = st.selectbox("Look inside an example (or click a row above)", list(texts), key=INSPECT,
                       format_func=lambda r: f"#{r}: {short(texts[r])}")
    try:
        effects = bench.responsible(row, keep, top=5)
    except Exception as exc:
        ui.error("Could not find the heads responsible", exc)
        return
    names = ui.workload().loaded.label_names
    st.dataframe(pd.DataFrame([{"removed head": head_name(e.layer, e.head), "loss now": round(e.loss_masked, 3),
                                "with it back": round(e.loss_restored, 3), "gain": round(e.gain, 3),
                                **({"prediction with it back": names[e.prediction] if names else e.prediction}
                                   if e.prediction is not None else {})} for e in effects]), hide_index=True)
    removed = [tuple(h) for h in (~keep).nonzero().tolist()]
    chosen = st.multiselect("removed heads to look at (their attention on this example, in the dense model)",
                            removed, default=[(e.layer, e.head) for e in effects[:2]], max_selections=4,
                            format_func=lambda h: head_name(*h), key=f"inspect_heads_{row}")
    columns = st.columns(2)
    for i, (layer, head) in enumerate(chosen):
        try:
            weights, tokens = bench.attention_pattern(row, layer, head)
        except Exception as exc:
            ui.error(f"Could not show {head_name(layer, head)}", exc)
            continue
        columns[i % 2].plotly_chart(attention_figure(weights, tokens, title=head_name(layer, head)),
                                    key=f"inspect_att_{row}_{layer}_{head}")


# ------------------------------------------------------------------------------------------ A / B
def swap() -> None:
    a, b = ui.pinned(), ui.keep()
    ui.set_keep(a)
    ui.pin(b)


def side_by_side(keep: torch.Tensor) -> None:
    bench = ui.bench()
    a = ui.pinned()
    st.subheader("Masks side by side")
    c = st.columns([2, 1, 1, 2])
    c[0].button("Pin this mask as A", on_click=ui.pin, args=(keep.clone(),), key="pin_a", icon=":material/push_pin:")
    c[1].button("Swap A and B", on_click=swap, disabled=a is None, key="swap_ab")
    c[2].button("Unpin A", on_click=ui.pin, args=(None,), disabled=a is None, key="unpin_a")
    if a is None:
        c[3].caption("Pin the current mask as A, then keep exploring: B is always the mask you edit. "
                     "The link in the address bar keeps both.")
        return
    c[3].caption(f"A keeps {int(a.sum())} heads, B {int(keep.sum())}; the link keeps both.")
    try:
        rows = {"dense": bench.summary(), "A": bench.summary(a), "B": bench.summary(keep)}
        changes = bench.what_changed(a, keep)
    except Exception as exc:
        ui.error("Could not compare A and B", exc)
        return
    _, label = ui.quality_key(bench.dense)
    st.dataframe(pd.DataFrame([{"mask": name, label: f"{100 * r.quality:.1f}%", "loss": f"{r.loss:.3f}",
                                "heads": f"{r.heads_kept} / {r.heads_total}",
                                "FLOPs / token": f"{r.flops_per_token / 1e6:.1f} M",
                                "KV cache / token": f"{r.kv_cache_bytes_per_token / 1024:.1f} KiB",
                                "latency": f"{r.latency_ms:.1f} ms" if r.latency_ms is not None else "not measured"}
                               for name, r in rows.items()]), hide_index=True)
    group = layout.kv_group_size(bench.model)
    st.plotly_chart(ab_grid_figure(a.numpy(), keep.numpy(), kv_group_size=group if group > 1 else None), key="ab_grid")
    if changes.task == "classification":
        st.markdown("**Examples one mask gets right and the other wrong**")
        flipped_table(changes, "ab_flips", ("only B right", "A wrong, B right"), ("only A right", "A right, B wrong"))
    else:
        token_view(changes)


# ------------------------------------------------------------------------------------------ generation
def generation(keep: torch.Tensor) -> None:
    bench, ss, w = ui.bench(), st.session_state, ui.workload()
    st.subheader("Generation side by side")
    st.caption("Greedy continuation (always the most likely next token) of one prompt by the dense model and by "
               "your masks, so you see what pruning does to the text, not only to perplexity.")
    texts = w.df["text"].astype(str).tolist()[:100]
    c1, c2 = st.columns([3, 1])
    pick = c1.selectbox("start from a live example", range(len(texts)), format_func=lambda i: short(texts[i]),
                        key="gen_example")
    words = texts[pick].split()
    prompt = st.text_input("prompt (edit it freely)", value=" ".join(words[: max(3, len(words) // 2)]),
                           key=f"gen_prompt_{pick}")
    n = c2.slider("new tokens", 4, 48, 20, key="gen_tokens")
    a = ui.pinned()
    masks = {"dense": None, **({"A": a} if a is not None else {}), "B (current)": keep}
    request = (prompt, n, tuple(encode_mask(m) if m is not None else "dense" for m in masks.values()))
    if st.button("Generate", key="gen_go", type="primary"):
        try:
            with st.spinner("generating…"):
                ss["generated"] = (request, bench.generate(prompt, masks, max_new_tokens=n))
        except Exception as exc:
            ui.error("Could not generate", exc)
    found = ss.get("generated")
    if found and found[0] == request:
        for column, out in zip(st.columns(len(found[1])), found[1]):
            column.markdown(f"**{out.name}** · {out.heads_kept} heads")
            column.markdown(f"{md(prompt)} **{md(out.text)}**")
    elif found:
        st.caption("The prompt or the masks changed since the last generation: press Generate again.")
