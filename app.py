"""headprune dashboard: `streamlit run app.py [-- --model PRESET|DIR|HUB_ID --data tweets|FILE|HUB_NAME]`.

The entry page: loads the model and the live evaluation set (sidebar), keeps the session's mask in
`st.session_state` and the URL, and hands over to the page chosen in the navigation (app_pages/; not `pages/`, which Streamlit would
run as a v1 multipage app on the first run of a fresh server, bypassing this entry script).
Environment: HEADPRUNE_MODEL, HEADPRUNE_DATA, HEADPRUNE_LIVE_EXAMPLES (see `headprune.workbench.ui_state.app_settings`).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import streamlit as st  # noqa: E402
import torch  # noqa: E402

from app_pages import _ui as ui  # noqa: E402
from headprune.core.errors import UserError  # noqa: E402
from headprune.core.files import atomic_write_bytes  # noqa: E402
from headprune.core.progress import eta_text, format_seconds  # noqa: E402
from headprune.core.roots import safe_upload_name  # noqa: E402
from headprune.model import adapters, layout  # noqa: E402
from headprune.presets import PRESETS, build_preset, preset_meta  # noqa: E402
from headprune.sources.files import read_local  # noqa: E402
from headprune.workbench.ui_state import MaskHistory, app_settings, decode_mask  # noqa: E402

st.set_page_config(page_title="headprune", page_icon=":material/content_cut:", layout="wide")


@st.cache_resource(show_spinner=False)
def _set_threads() -> int:
    """torch.set_num_threads once per server process (every core, at most 8: small matmuls gain nothing more)."""
    threads = max(1, min(8, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    return threads


_set_threads()
SETTINGS = app_settings(sys.argv[1:])
POLICY = ui.policy()
OTHER_MODEL = "Hub id or folder…"
DATA_KINDS = {"tweets": "Built-in tweets", "path": "File or Hub dataset", "upload": "Upload a file"}


def build_preset_with_progress(name: str) -> None:
    """First use of minilm-tweets: fine-tune it with a visible progress bar and a measured time estimate."""
    if name != "minilm-tweets" or preset_meta(name) is not None:
        return
    st.markdown("### Preparing the `minilm-tweets` model (first start only)")
    st.write("MiniLM-L6 is fine-tuned for one epoch on 6,000 tweets and cached; later starts load it in seconds. "
             "The remaining time below is measured from progress so far.")
    bar = st.progress(0.0, text="starting")
    start = time.monotonic()

    def progress(fraction: float, message: str) -> None:
        eta = eta_text(fraction, time.monotonic() - start)
        bar.progress(min(1.0, max(0.0, fraction)), text=f"{message} — {eta or 'estimating time…'}")

    build_preset(name, progress=progress)
    bar.progress(1.0, text=f"done in {format_seconds(time.monotonic() - start)}")


def load(model_spec: str, data_spec: str, live_examples: int, data_options: dict | None = None, auto: bool = False):
    build_preset_with_progress(model_spec)
    with st.spinner(f"Loading {model_spec} and {live_examples} examples of {Path(data_spec).name or data_spec}…"):
        return ui.cached_workload(model_spec, data_spec, int(live_examples), tuple(sorted((data_options or {}).items())),
                                  auto)


def upload_to_file(upload) -> str:
    """An uploaded CSV/JSON/Parquet file, saved in the cache's uploads folder under `<content hash>/<its own name,
    sanitised and short>`, where `headprune.sources.data.load_data` can read it."""
    content = upload.getvalue()
    path = ui.UPLOADS / safe_upload_name(upload.name, content)
    if not path.exists():
        atomic_write_bytes(path, content)
    return str(path)


@st.cache_data(show_spinner=False, max_entries=8)
def upload_columns(path: str) -> list[str]:
    """The columns of an uploaded file, read the way the loader reads it ([] when it cannot be read: the
    loader says why when the user presses Load)."""
    try:
        return [str(c) for c in read_local(Path(path), None).columns if str(c) != "split"]
    except Exception:
        return []


def column_pickers(columns: list[str]) -> dict:
    """Text and label column pickers for an uploaded file (a one-column file: what it can and cannot be used for)."""
    if len(columns) == 1:
        st.info(f"This file has one column, “{columns[0]}”: enough text for a language model. A classifier also "
                "needs a label column: add one (for a CSV, a header like `text,label`) and upload the file again.")
        return {"text_column": columns[0]}
    guess = "(guess)"
    text = st.selectbox("Text column", [guess, *columns])
    label = st.selectbox("Label column", [guess, *columns])
    return {k: v for k, v in (("text_column", text), ("label_column", label)) if v != guess}


def sidebar() -> None:
    """Model and data pickers; 'Load' swaps the workload, or shows why not and keeps the current one."""
    ss = st.session_state
    current = ss.get("workload_spec", (SETTINGS["model"], SETTINGS["data"], SETTINGS["live_examples"], {}))
    with st.sidebar:
        st.markdown("## :material/content_cut: headprune")
        with st.expander("Model and data", expanded="workload" not in ss):
            models = list(PRESETS) + [OTHER_MODEL]
            index = models.index(current[0]) if current[0] in PRESETS else len(models) - 1
            choice = st.selectbox("Model", models, index=index, help="\n".join(f"- **{k}**: {v}" for k, v in PRESETS.items()))
            model_spec = choice
            if choice == OTHER_MODEL:
                model_spec = st.text_input("Hub id or model folder", value="" if current[0] in PRESETS else current[0],
                                           placeholder="bert-base-uncased or /path/to/folder")
            if "data_kind" not in ss:  # keyed, so a load never flips it (an upload stays an upload)
                ss["data_kind"] = "tweets" if current[1] == "tweets" else "path"
            kind = st.radio("Data", list(DATA_KINDS), format_func=DATA_KINDS.get, key="data_kind", horizontal=False)
            data_spec, options = "tweets", {}
            if kind == "path":
                typed = "" if current[1] == "tweets" or current[1].startswith(str(ui.UPLOADS)) else current[1]
                data_spec = st.text_input("Data file or Hub dataset", value=typed, placeholder="/path/data.csv or glue")
            elif kind == "upload":
                upload = st.file_uploader("CSV, JSON, JSONL or Parquet", type=["csv", "tsv", "json", "jsonl", "parquet"],
                                          key="data_upload")
                data_spec = upload_to_file(upload) if upload is not None else ""
                columns = upload_columns(data_spec) if data_spec else []
                if columns:
                    options = column_pickers(columns)
            live = st.number_input("Live evaluation examples", min_value=8, max_value=20000, step=64,
                                   value=int(current[2]),
                                   help="Every toggle is evaluated exactly on this many examples: more is steadier, "
                                        "fewer is faster. The default set shrinks for slow models until a toggle takes "
                                        "about 2 s.")
            if "workload" in ss:
                seconds, measured = ui.bench().toggle_seconds()
                st.caption(f"A toggle takes about {seconds:.1f} s on {len(ss['workload'].df)} examples "
                           f"({'measured' if measured else 'expected from the dense pass'}).")
            if st.button("Load", type="primary", width="stretch"):
                spec = (model_spec.strip(), data_spec.strip(), int(live), options)
                try:
                    if not spec[0] or not spec[1]:
                        raise UserError("choose a model and data first")
                    # typed paths are confined in served mode; the server's own start-up choices and uploads
                    # (saved by the app itself) are not typed paths
                    model = spec[0] if spec[0] == current[0] else POLICY.source(spec[0], "model", builtin=PRESETS)
                    data = spec[1] if kind == "upload" or spec[1] == current[1] else \
                        POLICY.source(spec[1], "data", builtin={"tweets"})
                    spec = (model, data, *spec[2:])
                    ss["workload"] = load(*spec)
                    ss["workload_spec"] = spec
                except Exception as exc:  # any failure: say why, keep what was loaded
                    ui.error(f"Could not load {spec[0] or 'the model'} with {Path(spec[1]).name or 'that data'}", exc)
        if POLICY.served:
            roots = {"data": POLICY.data_root, "models": POLICY.models_root, "exports": POLICY.exports_root}
            st.caption("Served to a class: typed paths are confined to "
                       + "; ".join(f"{k} under `{v}`" if v else f"no typed {k} paths" for k, v in roots.items())
                       + ". Uploads and built-in presets always work.")
        if "workload" in ss:
            describe(ss["workload"])


def count_text(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def describe(w) -> None:
    model = w.model
    layers, heads = w.shape
    kv = layout.num_kv_heads(model)
    grid = f"{layers} × {heads}" + (f" ({kv} KV heads)" if kv != heads else "")
    key, label = ui.quality_key(w.dense)
    rows = [("model", w.loaded.model_id), ("family", adapters.family_of(model)), ("layers × heads", grid),
            ("parameters", count_text(layout.parameter_count(model))), ("task", w.loaded.task),
            ("data", f"{Path(w.data_spec).name or w.data_spec} · {len(w.df)} examples"),
            (f"dense {label}", f"{w.dense[key]:.1%}" if key != "loss" else f"{w.dense[key]:.3f}"),
            ("dense loss", f"{w.dense['loss']:.3f}")]
    st.markdown("\n".join(f"- **{k}**: {v}" for k, v in rows))
    st.caption("Your mask lives in this browser session and in the address bar: copy the link to share it.")


def sync_mask() -> None:
    """The session's mask (B) and pinned mask A: kept across pages; a new session adopts the masks in the URL
    (`?mask=`, `?a=`), if they fit the model; another model starts with all heads and nothing pinned."""
    ss, w = st.session_state, st.session_state["workload"]
    if ss.get(ui.KEEP_FOR) != w.key:
        keep = pinned = None
        if ui.KEEP_FOR not in ss:  # a new session: adopt the link's masks
            keep = mask_from_link("mask", w.shape, "The mask in the link was not applied")
            pinned = mask_from_link("a", w.shape, "The pinned mask A in the link was not applied")
        keep = torch.ones(w.shape, dtype=torch.bool) if keep is None else keep
        ss[ui.KEEP], ss[ui.KEEP_FOR], ss[ui.HISTORY] = keep, w.key, MaskHistory()
        ss.pop(ui.MASK_A, None)
        if pinned is not None:
            ss[ui.MASK_A] = pinned
    ui.sync_url()


def mask_from_link(name: str, shape: tuple[int, int], what: str):
    """The mask in the URL's `name` parameter, or None (absent, or shown as an error when it does not fit)."""
    code = st.query_params.get(name)
    if not code:
        return None
    try:
        return decode_mask(code, shape)
    except ValueError as exc:
        ui.error(what, exc)
        return None


if "workload" not in st.session_state:
    try:
        spec = (SETTINGS["model"], SETTINGS["data"], SETTINGS["live_examples"], {})
        st.session_state["workload"] = load(*spec, auto=SETTINGS["auto_live"])
        sized = st.session_state["workload"].settings["limit"]  # the size chosen for this model, when shrunk
        st.session_state["workload_spec"] = (*spec[:2], sized or spec[2], spec[3])
    except Exception as exc:
        ui.error(f"Could not load the starting model {SETTINGS['model']} with data {SETTINGS['data']}", exc)
        st.info("Pick another model or data in the sidebar and press Load.")
        sidebar()
        st.stop()

sync_mask()
sidebar()
sync_mask()  # the sidebar may have loaded another workload

PAGES = [
    st.Page("app_pages/home.py", title="Learn", icon=":material/school:", default=True),
    st.Page("app_pages/importance.py", title="Importance", icon=":material/grid_on:"),
    st.Page("app_pages/prune.py", title="Prune", icon=":material/content_cut:"),
    st.Page("app_pages/curves.py", title="Curves", icon=":material/show_chart:"),
    st.Page("app_pages/export.py", title="Export", icon=":material/download:"),
]
st.navigation(PAGES, position="top").run()
