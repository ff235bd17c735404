"""The Prune page's example sections under AppTest: what changed, masks A / B (kept across pages and in the
URL), automatic masks written into A, generation side by side on a causal LM. The tiny workspace and the `app`
fixture are in tests/app/conftest.py."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("streamlit")
from helpers.apptest import APP, TIMEOUT, tiny_llama_app
from helpers.apptest import button as _button
from helpers.apptest import metric as _metric
from helpers.apptest import ok as _ok
from streamlit.testing.v1 import AppTest

from headprune.workbench.ui_state import decode_mask, encode_mask

PRUNE = "app_pages/prune.py"


def _mask(*removed):
    keep = torch.ones(2, 4, dtype=torch.bool)
    for layer, head in removed:
        keep[layer, head] = False
    return keep


def test_what_changed_counts_flips_and_looks_inside_an_example(app):
    app.run()
    keep = _mask((0, 0), (0, 1), (1, 2), (1, 3))
    app.session_state["keep"] = keep
    app.switch_page(PRUNE).run()
    _ok(app)
    changes = app.session_state["bench"].what_changed(None, keep)
    assert _metric(app, "fixed") == str(len(changes.fixed)) and _metric(app, "broken") == str(len(changes.broken))
    assert len(changes.fixed) + len(changes.broken) + len(changes.changed) > 0
    first = (*changes.broken, *changes.fixed, *changes.changed)[0]
    inspect = app.selectbox(key="inspect_row")
    assert inspect.value == first.index
    heads = next(m for m in app.multiselect if m.key == f"inspect_heads_{first.index}")
    assert len(heads.value) == 2 and all(not keep[h] for h in heads.value)  # removed heads, most helpful first
    frames = [d.value for d in app.dataframe]
    assert any("with it back" in f.columns for f in frames)


def test_pinned_mask_survives_page_switches_and_reloads_from_the_url(app, workspace, monkeypatch):
    app.run()
    a = _mask((0, 1), (1, 3))
    app.session_state["keep"] = a
    app.switch_page(PRUNE).run()
    _button(app, "Pin this mask as A").click().run()
    _ok(app)
    assert torch.equal(app.session_state["mask_a"], a)
    b = _mask((1, 0))
    app.session_state["keep"] = b
    app.run()
    _ok(app)
    assert any("3 heads differ between A and B" in c.proto.spec for c in app.get("plotly_chart"))
    app.radio(key="changed_base").set_value("A").run()  # what changed from A to B
    _ok(app)
    assert app.session_state["bench"].what_changed(a, b).n == 64
    table = next(d.value for d in app.dataframe if "mask" in d.value.columns)
    assert list(table["mask"]) == ["dense", "A", "B"] and list(table["heads"]) == ["8 / 8", "6 / 8", "7 / 8"]
    for page in ("app_pages/export.py", "app_pages/home.py", PRUNE):
        app.switch_page(page).run()
        _ok(app)
        assert torch.equal(app.session_state["mask_a"], a) and torch.equal(app.session_state["keep"], b)
    assert app.query_params["a"] == [encode_mask(a)] or app.query_params["a"] == encode_mask(a)
    # a new session opened from the link has both masks
    fresh = AppTest.from_file(APP, default_timeout=TIMEOUT)
    fresh.query_params["mask"], fresh.query_params["a"] = encode_mask(b), encode_mask(a)
    fresh.run()
    _ok(fresh)
    assert torch.equal(fresh.session_state["mask_a"], a) and torch.equal(fresh.session_state["keep"], b)
    # swap, then unpin
    fresh.switch_page(PRUNE).run()
    _button(fresh, "Swap A and B").click().run()
    assert torch.equal(fresh.session_state["mask_a"], b) and torch.equal(fresh.session_state["keep"], a)
    _button(fresh, "Unpin A").click().run()
    _ok(fresh)
    assert "mask_a" not in fresh.session_state


def test_automatic_masks_can_write_into_a(app):
    app.run()
    app.switch_page(PRUNE).run()
    app.radio(key="auto_target").set_value("A").run()
    app.slider(key="prune_n").set_value(3).run()
    _button(app, "Prune N least important").click().run()
    _ok(app)
    assert int(app.session_state["mask_a"].sum()) == 5 and bool(app.session_state["keep"].all())
    assert _metric(app, "heads kept") == "8 / 8"
    assert decode_mask(encode_mask(app.session_state["mask_a"])).sum() == 5


def test_generation_side_by_side_on_a_causal_lm(tmp_path, monkeypatch):
    at = tiny_llama_app(tmp_path, monkeypatch, ["the movie is good and fine", "this car is bad",
                                                "a great tweet is not awful"] * 6)
    keep = torch.ones(3, 6, dtype=torch.bool)
    keep[0, :3] = False
    at.session_state["keep"] = keep
    at.switch_page(PRUNE).run()
    _ok(at)
    assert any("became less likely" in c.value for c in at.caption)  # the token view of the loss movers
    _button(at, "Generate").click().run()
    _ok(at)
    texts = [m.value for m in at.markdown]
    assert any(t.startswith("**dense** · 18 heads") for t in texts)
    assert any(t.startswith("**B (current)** · 15 heads") for t in texts)


def test_learn_walkthrough_says_what_was_lost_and_which_heads(app):
    app.run()
    for label in ("Score the heads", "Got it", "Remove the least important half (4 heads)"):
        _button(app, label).click().run()
        _ok(app)
    keep = app.session_state["tour"]["half"][0]
    broken = app.session_state["bench"].what_changed(None, keep).broken
    text = " ".join(m.value for m in app.markdown)
    assert f"{len(broken)} now wrong" in text
    assert all(f.text in text for f in broken[:3]) and ("Most responsible: layer" in text or not broken)
    assert "4 of 6 steps done" in app.get("progress")[0].proto.text


def test_errors_name_uploads_as_uploaded_and_say_where_to_fix_them(workspace, monkeypatch, tmp_path):
    """A one-column file for a classifier: the message names the file (no temp folder) and the sidebar's box."""
    from app_pages._ui import UPLOADS

    folder = UPLOADS / "0123456789abcdef"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "only-text.csv").write_text("text\nhello there\ngood day\n")
    monkeypatch.setenv("HEADPRUNE_MODEL", str(workspace[0]))
    monkeypatch.setenv("HEADPRUNE_DATA", str(folder / "only-text.csv"))
    monkeypatch.setenv("HEADPRUNE_LIVE_EXAMPLES", "8")
    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path / "cache"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    message = next(e.value for e in at.error if "Could not load" in e.value)
    assert "only-text.csv" in message and str(UPLOADS) not in message and "0123456789abcdef" not in message
    assert "pick the Label column" in message


def test_prune_caption_is_never_stale_and_the_export_folder_survives_page_switches(app, tmp_path):
    app.run()
    app.switch_page(PRUNE).run()
    _button(app, "Invert").click().run()
    assert app.session_state["last_action"] == "inverted the mask"
    box = next(c for c in app.checkbox if c.key.startswith("cb_0_1_"))
    box.check().run()  # a later change by hand: the caption about "invert" would be stale
    _ok(app)
    assert "last_action" not in app.session_state
    assert not any(c.value == "inverted the mask" for c in app.caption)
    app.switch_page("app_pages/export.py").run()
    app.text_input(key="export_folder").set_value(str(tmp_path / "mine")).run()
    app.switch_page(PRUNE).run()
    app.switch_page("app_pages/export.py").run()
    assert app.text_input(key="export_folder").value == str(tmp_path / "mine")


def test_user_text_is_literal_in_markdown():
    from app_pages._examples import md

    assert md("a *b* [c](d) $x$ #1 <b>") == r"a \*b\* \[c\]\(d\) \$x\$ \#1 \<b\>"
