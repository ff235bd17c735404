"""The dashboard under streamlit.testing.v1.AppTest: every page renders on a tiny model, masks drive the numbers."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from headprune.workbench.ui_state import encode_mask  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
PAGES = ["app_pages/home.py", "app_pages/importance.py", "app_pages/prune.py", "app_pages/curves.py", "app_pages/export.py"]
TIMEOUT = 180  # torch imports and the first model load are slow on a shared 2-core machine


def tiny_workspace(folder: Path, *, rows: int = 96) -> tuple[Path, Path]:
    """A tiny BERT classifier (2 layers x 4 heads, WordPiece tokenizer) saved to a folder, and a 3-class CSV."""
    from tiny_text import WORDS, bert_tokenizer, save, tiny_bert
    from transformers import BertTokenizer

    folder = Path(folder)
    bert_tokenizer(folder / "tok")  # writes the WordPiece vocab.txt
    # transformers 5 ignores vocab_file= in the constructor; from_pretrained on the folder reads it
    tokenizer = BertTokenizer.from_pretrained(str(folder / "tok"), do_lower_case=True)
    model_dir = save(tiny_bert(tokenizer, label_names=["negative", "neutral", "positive"]), tokenizer, folder / "model")
    rng = random.Random(0)
    lines = ["text,label"]
    for _ in range(rows):
        words = rng.choices(WORDS, k=rng.randint(3, 12))
        label = 0 if "bad" in words or "hate" in words else 2 if "good" in words or "love" in words else 1
        lines.append(f"{' '.join(words)},{label}")
    data = folder / "data.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return model_dir, data


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tiny_workspace(tmp_path_factory.mktemp("app"))


@pytest.fixture
def app(workspace, monkeypatch, tmp_path):
    model_dir, data = workspace
    monkeypatch.setenv("HEADPRUNE_MODEL", str(model_dir))
    monkeypatch.setenv("HEADPRUNE_DATA", str(data))
    monkeypatch.setenv("HEADPRUNE_LIVE_EXAMPLES", "64")
    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path / "cache"))
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def _no_exceptions(at):
    assert not at.exception, [e.value for e in at.exception]


def _metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


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


def test_grid_toggle_then_reset_and_undo_buttons(app):
    """The grid callback's logic is `toggle_selection` (tests/test_session.py); the real click is in test_browser."""
    app.run()
    app.switch_page("app_pages/prune.py").run()
    from headprune.workbench.ui_state import toggle_selection

    new, changed = toggle_selection(app.session_state["keep"], [{"customdata": [1, 2]}])
    assert changed == [(1, 2)]
    app.session_state["keep"] = new
    app.run()
    assert _metric(app, "heads kept") == "7 / 8"
    next(b for b in app.button if b.label == "Reset").click().run()
    assert _metric(app, "heads kept") == "8 / 8"
    next(b for b in app.button if "Undo" in b.label).click().run()
    assert _metric(app, "heads kept") == "7 / 8"
    next(b for b in app.button if b.label == "Invert").click().run()
    assert _metric(app, "heads kept") == "1 / 8"


def test_checkbox_grid_toggles_a_head(app):
    app.run()
    app.switch_page("app_pages/prune.py").run()
    box = next(c for c in app.checkbox if c.key.startswith("cb_0_1_"))
    box.uncheck().run()
    _no_exceptions(app)
    assert not app.session_state["keep"][0, 1]
    assert _metric(app, "heads kept") == "7 / 8"


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


def test_a_recovery_made_on_the_prune_page_is_exported_with_the_mask(app, tmp_path):
    _two_heads_off(app)
    app.switch_page("app_pages/prune.py").run()
    app.radio(key="recover_method").set_value("scales").run()
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
    assert record["meta"]["recovery"]["method"] == "scales"


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
    from tiny_text import word_tokenizer

    from headprune.model.tiny import tiny_model

    tokenizer = word_tokenizer()
    model = tiny_model("llama", vocab_size=len(tokenizer), pad_token_id=tokenizer.eos_token_id)
    model.save_pretrained(tmp_path / "llama")
    tokenizer.save_pretrained(tmp_path / "llama")
    (tmp_path / "text.csv").write_text("text\n" + "\n".join(["the movie is good", "this car is bad", "a great tweet"] * 8) + "\n")
    monkeypatch.setenv("HEADPRUNE_MODEL", str(tmp_path / "llama"))
    monkeypatch.setenv("HEADPRUNE_DATA", str(tmp_path / "text.csv"))
    monkeypatch.setenv("HEADPRUNE_LIVE_EXAMPLES", "16")
    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path / "cache"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
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
    monkeypatch.setattr("headprune.search.compress.SLICE_RANGE", (2, 4))  # short distillation slices: a quick run
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
