"""The dashboard's deploy sections under AppTest on tiny models: "loads in" badges, "Make it runtime-safe",
latency in both runtimes (Prune) and the ONNX export job (Export)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("streamlit")
from helpers.apptest import APP, TIMEOUT  # noqa: E402
from helpers.apptest import button as _button  # noqa: E402
from helpers.apptest import no_exceptions as _no_exceptions  # noqa: E402
from helpers.tiny import save, tiny_llama, word_tokenizer  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

UNEVEN_BERT = torch.tensor([[1, 0, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
UNEVEN_LLAMA = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 0, 0]], dtype=torch.bool)


def _app(monkeypatch, tmp_path, model, data, examples: int) -> AppTest:
    monkeypatch.setenv("HEADPRUNE_MODEL", str(model))
    monkeypatch.setenv("HEADPRUNE_DATA", str(data))
    monkeypatch.setenv("HEADPRUNE_LIVE_EXAMPLES", str(examples))
    monkeypatch.setenv("HEADPRUNE_CACHE", str(tmp_path / "cache"))
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


@pytest.fixture
def bert_app(app):
    """The tiny BERT workspace under AppTest (tests/app/conftest.py: 64 live examples)."""
    return app


@pytest.fixture
def llama_app(monkeypatch, tmp_path):
    """A tiny Llama (3 layers x 6 query heads in 2 KV groups of 3, hidden 48: 3 or 6 heads per layer load)."""
    tokenizer = word_tokenizer()
    save(tiny_llama(tokenizer), tokenizer, tmp_path / "llama")
    (tmp_path / "text.csv").write_text("text\n" + "\n".join(["the movie is good", "this car is bad", "a great tweet"] * 8) + "\n")
    return _app(monkeypatch, tmp_path, tmp_path / "llama", tmp_path / "text.csv", 16)


def _open(app, page: str, keep: torch.Tensor) -> None:
    app.run()
    app.session_state["keep"] = keep
    app.switch_page(page).run()
    _no_exceptions(app)
    assert not app.error, [e.value for e in app.error]


def _badges(app) -> str:
    return next(m.value for m in app.markdown if m.value.startswith("**Loads in**"))


def test_bert_badges_give_each_reason_and_no_runtime_safe_button(bert_app):
    _open(bert_app, "app_pages/prune.py", UNEVEN_BERT)
    badges = _badges(bert_app)
    for text in ("headprune ✔", "plain transformers ✘", "ONNX Runtime ✔", "fixed-shape engines (vLLM, TGI) ✘"):
        assert text in badges, badges
    captions = [c.value for c in bert_app.caption]
    assert any(c.startswith("✘ plain transformers: BertConfig has no head_dim") for c in captions)
    assert any(c.startswith("✘ fixed-shape engines (vLLM, TGI): these engines read the model") for c in captions)
    assert any(c.startswith("No runtime-safe mask is near this one") for c in captions)
    assert not [b for b in bert_app.button if b.label == "Make it runtime-safe"]
    bert_app.switch_page("app_pages/export.py").run()
    assert "plain transformers ✘" in _badges(bert_app)


def test_make_it_runtime_safe_applies_the_nearest_uniform_mask_with_its_cost(llama_app):
    _open(llama_app, "app_pages/prune.py", UNEVEN_LLAMA)
    assert "plain transformers ✘" in _badges(llama_app)
    _button(llama_app, "Make it runtime-safe").click().run()
    _no_exceptions(llama_app)
    assert not llama_app.error, [e.value for e in llama_app.error]
    keep = llama_app.session_state["keep"]
    assert keep.sum(-1).tolist() == [3, 3, 3]
    assert keep.view(3, 2, 3).all(-1).sum(-1).tolist() == [1, 1, 1]  # one whole KV group per layer
    badges = _badges(llama_app)
    assert "✘" not in badges and "fixed-shape engines (vLLM, TGI) ✔" in badges
    cost = next(c.value for c in llama_app.caption if c.value.startswith("Made runtime-safe"))
    assert "3 heads in every layer (1 KV)" in cost and "accuracy" in cost and "pts) on the live set" in cost
    assert not [b for b in llama_app.button if b.label == "Make it runtime-safe"]
    next(b for b in llama_app.button if "Undo" in b.label).click().run()
    assert torch.equal(llama_app.session_state["keep"], UNEVEN_LLAMA)
    llama_app.switch_page("app_pages/export.py").run()
    _no_exceptions(llama_app)
    assert _button(llama_app, "Make it runtime-safe").key == "export_runtime_safe"


@pytest.mark.slow
def test_latency_panel_times_both_runtimes(bert_app):
    _open(bert_app, "app_pages/prune.py", UNEVEN_BERT)
    bert_app.number_input(key="lat_batch").set_value(2)
    bert_app.number_input(key="lat_seq").set_value(16)
    bert_app.radio(key="lat_runtime").set_value("both")
    _button(bert_app, "Measure latency (dense vs this mask, physically pruned)").click().run()
    _no_exceptions(bert_app)
    assert not bert_app.error, [e.value for e in bert_app.error]
    lines = [m.value for m in bert_app.markdown if "FLOP ratio" in m.value]
    assert [line.split("**")[1] for line in lines] == ["PyTorch", "ONNX Runtime"]
    assert all("(2 × 16 tokens" in line for line in lines)
    assert any("No KV cache" in c.value for c in bert_app.caption)


@pytest.mark.slow
def test_export_page_onnx_job_shows_parity_and_ratios(bert_app, tmp_path):
    _open(bert_app, "app_pages/export.py", UNEVEN_BERT)
    (tmp_path / "mine.onnx").write_text("not headprune's")
    bert_app.text_input(key="onnx_path").set_value(str(tmp_path / "mine.onnx")).run()
    _button(bert_app, "Export to ONNX").click().run()
    assert any("already exists" in e.value for e in bert_app.error)  # checked before any work
    bert_app.text_input(key="onnx_path").set_value(str(tmp_path / "tiny.onnx"))
    bert_app.number_input(key="onnx_batch").set_value(2)
    bert_app.number_input(key="onnx_seq").set_value(16).run()
    _button(bert_app, "Export to ONNX").click().run()
    assert bert_app.session_state["jobs"]["onnx"].wait(300)["status"] == "done"
    bert_app.run()
    _no_exceptions(bert_app)
    assert any("ONNX Runtime matches PyTorch on the first 64 of 64 examples" in s.value for s in bert_app.success), \
        [e.value for e in bert_app.error]
    labels = {m.label for m in bert_app.metric}
    assert {"max |Δ logit|", "predictions agree", "FLOP ratio", "ONNX Runtime time ratio"} <= labels
    assert next(m.value for m in bert_app.metric if m.label == "predictions agree") == "100.0%"
    assert any("No KV cache" in c.value for c in bert_app.caption)
    assert (tmp_path / "tiny.onnx.headprune.json").exists()
