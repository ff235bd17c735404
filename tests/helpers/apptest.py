"""The dashboard under streamlit.testing.v1.AppTest: where the app is, how long a run may take, and reading
what it shows."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")
TIMEOUT = 180  # torch imports and the first model load are slow on a shared 2-core machine


def no_exceptions(at):
    assert not at.exception, [e.value for e in at.exception]


def ok(at):
    """No exception and no error message."""
    no_exceptions(at)
    assert not at.error, [e.value for e in at.error]


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


def button(at, label):
    return next(b for b in at.button if b.label == label)


def tiny_llama_app(folder: Path, monkeypatch, texts: list[str]):
    """The dashboard (already run once) on a tiny causal Llama (3 layers x 6 query heads, 2 KV groups) saved in
    `folder` and a CSV of `texts`, with a live set of 16 examples and its own cache."""
    from streamlit.testing.v1 import AppTest

    from headprune.model.tiny import tiny_model

    from .tiny import word_tokenizer

    tokenizer = word_tokenizer()
    model = tiny_model("llama", vocab_size=len(tokenizer), pad_token_id=tokenizer.eos_token_id)
    model.save_pretrained(folder / "llama")
    tokenizer.save_pretrained(folder / "llama")
    (folder / "text.csv").write_text("text\n" + "\n".join(texts) + "\n")
    monkeypatch.setenv("HEADPRUNE_MODEL", str(folder / "llama"))
    monkeypatch.setenv("HEADPRUNE_DATA", str(folder / "text.csv"))
    monkeypatch.setenv("HEADPRUNE_LIVE_EXAMPLES", "16")
    monkeypatch.setenv("HEADPRUNE_CACHE", str(folder / "cache"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    return at
