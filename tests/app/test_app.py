"""The dashboard under streamlit.testing.v1.AppTest: every page renders on a tiny model, masks drive the numbers.
The tiny workspace and the `app` fixture are in tests/app/conftest.py."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")
from helpers.apptest import APP, TIMEOUT, tiny_llama_app  # noqa: E402
from helpers.apptest import metric as _metric  # noqa: E402
from helpers.apptest import no_exceptions as _no_exceptions  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from headprune.workbench.ui_state import decode_mask, encode_mask  # noqa: E402

PAGES = ["app_pages/home.py", "app_pages/importance.py", "app_pages/prune.py", "app_pages/curves.py", "app_pages/export.py"]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_a_tiny_model(app, page):
    app.run()
    _no_exceptions(app)
    assert "2 × 4" in "".join(m.value for m in app.sidebar.markdown)
    app.switch_page(page).run()
    _no_exceptions(app)
    assert not app.error, [e.value for e in app.error]


def test_a_preset_session_mask_drives_the_prune_numbers(app):
    app.run()
    app.switch_page("app_pages/prune.py").run()
    _no_exceptions(app)
    assert _metric(app, "heads kept") == "8 / 8"
    dense_loss = _metric(app, "loss")
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, :3] = False
    app.session_state["keep"] = keep
    app.run()
    _no_exceptions(app)
    assert _metric(app, "heads kept") == "5 / 8"
    assert _metric(app, "loss") != dense_loss


def _grid(app):
    """The Prune page's head grid (a custom component: an UnknownElement to AppTest) and the data it was drawn with."""
    grid = next(e for e in app.get("bidi_component") if e.proto.component_name == "headprune_head_grid")
    return grid, json.loads(grid.proto.json)


def _grid_log(app, *events, client: str = "apptest", extra_states=()):
    """Run the app as the grid's browser half would make it run (AppTest cannot click inside a custom component):
    with the grid's state value set to its event log, `events` = (seq, [[layer, head], ...], keep). Uses AppTest's
    private `_tree.get_widget_states` / `_run`, the pair its public `run()` is made of."""
    grid, _ = _grid(app)
    states = app._tree.get_widget_states()
    states.widgets.add(id=grid.proto.id, json_value=json.dumps({"log": {"client": client, "events": [
        {"seq": seq, "heads": heads, "keep": keep} for seq, heads, keep in events]}}))
    states.widgets.extend(extra_states)
    return app._run(states)


def _url_mask(app) -> torch.Tensor:
    return decode_mask(app.query_params["mask"][0] if isinstance(app.query_params["mask"], list)
                       else app.query_params["mask"], (2, 4))


def test_grid_events_apply_in_order_once_and_drive_tiles_url_undo_reset_invert(app):
    """The grid's event log (app_pages/_grid.py) through its change callback; the real clicks are in test_browser."""
    app.run()
    app.switch_page("app_pages/prune.py").run()
    _no_exceptions(app)
    _, data = _grid(app)
    assert (data["layers"], data["heads"], data["keep"], data["acked"]) == (2, 4, "1" * 8, {})
    _grid_log(app, (1, [[1, 2]], False))
    _no_exceptions(app)
    assert _metric(app, "heads kept") == "7 / 8"
    assert not app.session_state["keep"][1, 2] and torch.equal(_url_mask(app), app.session_state["keep"])
    assert _grid(app)[1]["keep"] == "11111101" and _grid(app)[1]["acked"] == {"apptest": 1}
    # the browser resends what it has not seen acknowledged: applied events are skipped, new ones applied in order
    _grid_log(app, (1, [[1, 2]], False), (3, [[0, 0], [0, 1]], False), (2, [[0, 0]], False), (4, [[0, 1]], True))
    _no_exceptions(app)
    assert _metric(app, "heads kept") == "6 / 8"
    assert _grid(app)[1]["keep"] == "01111101" and _grid(app)[1]["acked"] == {"apptest": 4}
    assert len(app.session_state["mask_history"]) == 4  # one undo step per event that changed the mask
    assert torch.equal(_url_mask(app), app.session_state["keep"])
    # a reload mounts the grid afresh: a new client whose seq starts at 1 again; broken events change nothing
    _grid_log(app, (1, [[1, 2]], True), (2, "nonsense", False), (3, [[9, 9]], False), client="reloaded")
    _no_exceptions(app)
    assert _metric(app, "heads kept") == "7 / 8"
    assert _grid(app)[1]["acked"] == {"apptest": 4, "reloaded": 3}
    next(b for b in app.button if b.label == "Reset").click().run()
    assert _metric(app, "heads kept") == "8 / 8"
    next(b for b in app.button if "Undo" in b.label).click().run()
    assert _metric(app, "heads kept") == "7 / 8"
    next(b for b in app.button if b.label == "Invert").click().run()
    assert _metric(app, "heads kept") == "1 / 8"
    assert torch.equal(_url_mask(app), app.session_state["keep"])


def test_checkbox_grid_toggles_a_head(app):
    app.run()
    app.switch_page("app_pages/prune.py").run()
    box = next(c for c in app.checkbox if c.key.startswith("cb_0_1_"))
    box.uncheck().run()
    _no_exceptions(app)
    assert not app.session_state["keep"][0, 1]
    assert _metric(app, "heads kept") == "7 / 8"


def test_a_checkbox_follows_the_grid_and_its_old_value_is_not_a_click(app):
    """A head changed on the grid gets a new checkbox showing it; the old box, reported again by a browser that has
    not redrawn it, changes nothing (it would undo the grid's change)."""
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    app.run()
    app.switch_page("app_pages/prune.py").run()
    old = next(c for c in app.checkbox if c.key.startswith("cb_0_1_"))
    _grid_log(app, (1, [[0, 1]], False))
    new = next(c for c in app.checkbox if c.key.startswith("cb_0_1_"))
    assert new.key != old.key and not new.value
    _grid_log(app, (1, [[0, 1]], False), extra_states=[WidgetState(id=old.id, bool_value=True)])
    _no_exceptions(app)
    assert not app.session_state["keep"][0, 1] and _metric(app, "heads kept") == "7 / 8"
    new.check().run()  # the current box does count
    assert app.session_state["keep"][0, 1] and _metric(app, "heads kept") == "8 / 8"


def test_grid_protocol_helpers():
    """`new_events` keeps well-formed events above the last applied seq, in order; `grid_data` colours and labels."""
    from app_pages._grid import grid_data, new_events

    log = {"client": "c", "events": [{"seq": 3, "heads": [[0, 1]], "keep": True}, {"seq": 1, "heads": [[0, 0]], "keep": False},
                                     {"seq": 2, "heads": [[1, 1], [1, 2]], "keep": False}, {"seq": 4, "heads": [[0]], "keep": True},
                                     {"seq": 5, "heads": [[0, 0]], "keep": 1}, {"heads": [[0, 0]], "keep": True}, "junk"]}
    assert new_events(log, 0) == [(1, [(0, 0)], False), (2, [(1, 1), (1, 2)], False), (3, [(0, 1)], True)]
    assert new_events(log, 2) == [(3, [(0, 1)], True)]
    assert new_events(None, 0) == [] and new_events({"events": "x"}, 0) == []

    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[1, 3] = False
    blank = grid_data(keep, np.full((2, 4), np.nan))
    assert blank["keep"] == "11111110" and blank["legend"] is None and blank["grey"]
    assert set(blank["colors"]) == {"#c8c8c8"} and blank["tips"][6] == "layer 1, head 2\nscore: n/a"
    scores = np.arange(8.0).reshape(2, 4)
    scores[0, 1] = np.nan
    data = grid_data(keep, scores, kv_group_size=2, score_label="taylor", acked={"c": 3})
    assert data["legend"]["label"] == "taylor" and (data["legend"]["lo"], data["legend"]["hi"]) == ("0", "7")
    assert data["colors"][0] != data["colors"][7] and data["colors"][1] == "#c8c8c8" and data["grey"]
    assert data["tips"][7] == "layer 1, head 3 (KV group 1)\ntaylor: 7" and data["acked"] == {"c": 3}
    assert grid_data(keep, np.full((2, 4), 0.5))["legend"]["lo"] == "0.25"  # a flat map sits mid-scale


def test_mask_in_the_url_is_adopted_and_a_bad_link_is_refused(app):
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[1, 3] = False
    app.query_params["mask"] = encode_mask(keep)
    app.run()
    _no_exceptions(app)
    assert torch.equal(app.session_state["keep"], keep)


def test_a_link_for_another_model_shows_an_error_and_keeps_all_heads(app):
    app.query_params["mask"] = encode_mask(torch.ones(6, 12, dtype=torch.bool))
    app.run()
    _no_exceptions(app)
    assert any("mask in the link" in e.value for e in app.error)
    assert app.session_state["keep"].all()


def test_a_model_that_will_not_load_shows_the_reason(app, monkeypatch, tmp_path):
    monkeypatch.setenv("HEADPRUNE_MODEL", str(tmp_path / "missing"))
    app.run()
    _no_exceptions(app)
    assert any("Could not load" in e.value for e in app.error)


def _two_heads_off(app) -> None:
    """Run the app with heads (0, 1) and (1, 3) removed from the session's mask."""
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, 1] = keep[1, 3] = False
    app.run()
    app.session_state["keep"] = keep


def test_export_writes_a_pruned_folder_that_reloads_with_the_same_outputs(app, tmp_path):
    _two_heads_off(app)
    app.switch_page("app_pages/export.py").run()
    _no_exceptions(app)
    app.text_input(key="export_folder").set_value(str(tmp_path / "pruned")).run()
    next(b for b in app.button if b.label == "Write the pruned model").click().run()
    _no_exceptions(app)
    assert any("outputs match" in s.value for s in app.success), [e.value for e in app.error]
    record = json.loads((tmp_path / "pruned" / "headprune_pruned.json").read_text())
    assert record["kept_heads"] == [[0, 2, 3], [0, 1, 2]]


@pytest.mark.parametrize("method, ffn", [("scales", False), ("weights", True)])
def test_a_recovery_made_on_the_prune_page_is_exported_with_the_mask(app, tmp_path, method, ffn):
    _two_heads_off(app)
    app.switch_page("app_pages/prune.py").run()
    app.radio(key="recover_method").set_value(method).run()
    offered = [c for c in app.checkbox if c.key == "recover_ffn"]
    assert bool(offered) == ffn  # a BERT model: offered with refitted weights, not with per-head scales
    if ffn:
        offered[0].check().run()
    next(b for b in app.button if b.label == "Recover").click().run()
    _no_exceptions(app)
    assert not app.error, [e.value for e in app.error]
    assert any("other examples of the same file" in c.value for c in app.caption)  # a CSV has no training split
    app.switch_page("app_pages/export.py").run()
    assert app.checkbox(key="export_recovery").value
    app.text_input(key="export_folder").set_value(str(tmp_path / "recovered")).run()
    next(b for b in app.button if b.label == "Write the pruned model").click().run()
    _no_exceptions(app)
    assert any("match the recovered model" in s.value for s in app.success), [e.value for e in app.error]
    record = json.loads((tmp_path / "recovered" / "headprune_pruned.json").read_text())
    assert record["meta"]["recovery"]["method"] == method and record["meta"]["recovery"]["feed_forward"] is ffn


def test_the_learn_walkthrough_runs_one_click_per_step(app):
    app.run()
    _no_exceptions(app)
    for label in ("Score the heads", "Got it", "Remove the least important half (4 heads)", "Remove a random half",
                  "Recover"):
        next(b for b in app.button if b.label == label).click().run()
        _no_exceptions(app)
        assert not app.error, (label, [e.value for e in app.error])
    labels = [m.label for m in app.metric]
    assert "random half removed" in labels and "4 heads, recovered" in labels


def test_a_grouped_query_language_model_renders_its_grid_grouped(tmp_path, monkeypatch):
    """A tiny Llama (3 layers x 6 query heads in 2 KV groups), causal LM on text: Prune and Importance render."""
    at = tiny_llama_app(tmp_path, monkeypatch, ["the movie is good", "this car is bad", "a great tweet"] * 8)
    _no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    assert "3 × 6 (2 KV heads)" in "".join(m.value for m in at.sidebar.markdown)
    for page in ("app_pages/prune.py", "app_pages/importance.py", "app_pages/export.py"):
        at.switch_page(page).run()
        _no_exceptions(at)
        assert not at.error, (page, [e.value for e in at.error])


def test_loading_a_missing_model_from_the_sidebar_keeps_the_current_one(app, tmp_path):
    app.run()
    app.sidebar.selectbox[0].select("Hub id or folder…").run()
    app.sidebar.text_input[0].input(str(tmp_path / "nothing-here")).run()
    next(b for b in app.sidebar.button if b.label == "Load").click().run()
    _no_exceptions(app)
    assert any("Could not load" in e.value and "nothing-here" in e.value for e in app.error)
    assert app.session_state["workload"].shape == (2, 4)


def test_automatic_masks_and_recovery_buttons_on_the_prune_page(app):
    app.run()
    app.switch_page("app_pages/prune.py").run()
    app.slider(key="prune_n").set_value(3).run()
    next(b for b in app.button if b.label == "Prune N least important").click().run()
    _no_exceptions(app)
    assert not app.error, [e.value for e in app.error]
    assert _metric(app, "heads kept") == "5 / 8"
    next(b for b in app.button if b.label == "Recover").click().run()
    assert not app.error, [e.value for e in app.error]
    assert any(m.label.endswith("after recovery (weights)") for m in app.metric)
    app.slider(key="budget_drop").set_value(20.0).run()
    next(b for b in app.button if b.label == "Find the smallest model within budget").click().run()
    assert app.session_state["jobs"]["budget"].wait(120)["status"] == "done"  # a background job with progress
    app.run()
    _no_exceptions(app)
    assert not app.error, [e.value for e in app.error]
    assert app.session_state["last_action"].startswith("budget mask:")
    assert any("held-out" in c.value or "Judged on" in c.value for c in app.caption)
    app.checkbox(key="budget_recover").check().run()
    next(b for b in app.button if b.label == "Find the smallest model within budget").click().run()
    assert app.session_state["jobs"]["budget"].wait(120)["status"] == "done"
    app.run()
    _no_exceptions(app)
    assert not app.error, [e.value for e in app.error]
    assert "least-squares recovered" in app.session_state["last_action"]
    assert any(m.label.endswith("after recovery (weights)") for m in app.metric)  # the search's own recovery


@pytest.fixture
def served(workspace, monkeypatch, tmp_path):
    """The app served to a class: typed data paths under a data root, exports under an exports root."""
    import shutil

    from app_pages import _ui

    model_dir, data = workspace
    roots = {name: tmp_path / name for name in ("data", "exports")}
    for root in roots.values():
        root.mkdir()
    shutil.copy(data, roots["data"] / "class.csv")
    (tmp_path / "outside.csv").write_text(data.read_text())
    for key, value in (("HEADPRUNE_MODEL", str(model_dir)), ("HEADPRUNE_DATA", str(data)),
                       ("HEADPRUNE_LIVE_EXAMPLES", "64"), ("HEADPRUNE_CACHE", str(tmp_path / "cache")),
                       ("HEADPRUNE_SERVED", "1"), ("HEADPRUNE_DATA_ROOT", str(roots["data"])),
                       ("HEADPRUNE_EXPORTS_ROOT", str(roots["exports"]))):
        monkeypatch.setenv(key, value)
    _ui.policy.clear()  # one policy per server process: this test's server is served
    yield AppTest.from_file(APP, default_timeout=TIMEOUT), roots
    _ui.policy.clear()


def _load_data(app, typed: str) -> None:
    app.sidebar.radio[0].set_value("path").run()
    next(t for t in app.sidebar.text_input if t.label == "Data file or Hub dataset").input(typed).run()
    next(b for b in app.sidebar.button if b.label == "Load").click().run()
    _no_exceptions(app)


def test_served_mode_confines_typed_paths_to_the_roots(served, tmp_path):
    app, roots = served
    app.run()
    assert any("Served to a class" in c.value for c in app.sidebar.caption)
    for escape in (str(tmp_path / "outside.csv"), "../outside.csv", "/etc/os-release", "~/x.csv"):
        _load_data(app, escape)
        assert any("served to a class" in e.value for e in app.error), escape
        assert not any("PRETTY_NAME" in e.value for e in app.error)  # no file's content quoted
    (roots["data"] / "link.csv").symlink_to(tmp_path / "outside.csv")
    _load_data(app, "link.csv")  # a symlink inside the root pointing outside
    assert any("served to a class" in e.value for e in app.error)
    _load_data(app, "class.csv")
    assert not app.error, [e.value for e in app.error]
    assert app.session_state["workload"].data_spec == str(roots["data"] / "class.csv")
    app.switch_page("app_pages/export.py").run()
    for bad in (str(tmp_path / "anywhere"), "../escape"):
        app.text_input(key="export_folder").set_value(bad).run()
        next(b for b in app.button if b.label == "Write the pruned model").click().run()
        assert any("served to a class" in e.value for e in app.error), bad
        assert not (tmp_path / "anywhere").exists() and not (tmp_path / "escape").exists()
    app.text_input(key="export_folder").set_value("alice/m1").run()
    next(b for b in app.button if b.label == "Write the pruned model").click().run()
    _no_exceptions(app)
    assert (roots["exports"] / "alice" / "m1" / "headprune_pruned.json").is_file(), [e.value for e in app.error]


def test_compress_to_a_target_runs_in_the_background_and_shows_on_the_curves(workspace, tmp_path, monkeypatch):
    """Export → Compress on data with splits: a background job (progress, Cancel) that saves the smallest model
    within budget and draws its trajectory; the Curves page overlays the run."""
    model_dir, data = workspace
    rows = data.read_text().splitlines()
    split = tmp_path / "split.csv"
    split.write_text("\n".join([rows[0] + ",split"] + [f"{r},{'train' if i < 60 else 'validation' if i < 78 else 'test'}"
                                                        for i, r in enumerate(rows[1:])]) + "\n")
    monkeypatch.setenv("HEADPRUNE_MODEL", str(model_dir))
    monkeypatch.setenv("HEADPRUNE_DATA", str(split))
    monkeypatch.setenv("HEADPRUNE_LIVE_EXAMPLES", "8")
    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("headprune.search.compress_setup.SLICE_RANGE", (2, 4))  # short distillation slices: a quick run
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page("app_pages/export.py").run()
    _no_exceptions(at)
    at.number_input(key="compress_drop").set_value(50.0)  # anything passes: the run climbs to the top of the ladder
    at.number_input(key="compress_seconds").set_value(120)
    at.text_input(key="compress_folder").set_value(str(tmp_path / "small")).run()
    next(b for b in at.button if b.label == "Compress").click().run()
    assert at.session_state["jobs"]["compress"].wait(300)["status"] == "done"
    at.run()
    _no_exceptions(at)
    assert not at.error, [e.value for e in at.error]
    assert any("Wrote" in s.value and "compress_report.json" in s.value for s in at.success)
    report = json.loads((tmp_path / "small" / "compress_report.json").read_text())
    assert report["examples"]["judge"] == 10 and report["examples"]["test"] == 18  # validation apart from the live set
    assert report["heads_removed"] == 6 and report["stopped_by"] == "target"  # 2 layers × 4 heads, 1 kept in each
    assert any(m.label == "heads kept" for m in at.metric)
    at.switch_page("app_pages/curves.py").run()
    next(b for b in at.button if b.label == "Compute curves").click().run()
    assert at.session_state["jobs"]["curves"].wait(300)["status"] == "done"
    at.run()
    _no_exceptions(at)
    assert any("last compress run" in c.value for c in at.caption)
