"""The dashboard's UI-free state (headprune.workbench.ui_state): mask links, undo, app settings (no Streamlit)."""
import pytest
import torch

from headprune.workbench.ui_state import (
    MaskHistory,
    app_settings,
    decode_mask,
    encode_mask,
)


@pytest.mark.parametrize("shape", [(6, 12), (30, 9), (1, 1), (3, 5)])
def test_mask_link_round_trip(shape):
    keep = torch.rand(shape, generator=torch.Generator().manual_seed(1)) > 0.4
    text = encode_mask(keep)
    assert text.startswith(f"{shape[0]}x{shape[1]}-")
    assert torch.equal(decode_mask(text, shape), keep)


def test_mask_link_all_kept_is_short_and_readable():
    assert encode_mask(torch.ones(6, 12, dtype=torch.bool)) == "6x12-" + "f" * 18


@pytest.mark.parametrize("text, match", [("garbage", "not a headprune mask link"), ("6x12-fff", "damaged"),
                                         ("6x12-" + "z" * 18, "not a headprune mask link")])
def test_bad_mask_links_say_why(text, match):
    with pytest.raises(ValueError, match=match):
        decode_mask(text)


def test_mask_link_of_another_model_is_refused():
    with pytest.raises(ValueError, match="loaded model has 6 x 12"):
        decode_mask(encode_mask(torch.ones(3, 4, dtype=torch.bool)), (6, 12))


def test_undo_history_returns_masks_in_reverse_and_is_bounded():
    history = MaskHistory(limit=3)
    masks = [torch.eye(3, dtype=torch.bool).roll(i, 0) for i in range(5)]
    for m in masks:
        history.push(m)
    history.push(masks[-1])  # a repeat is not stored twice
    assert len(history) == 3
    assert torch.equal(history.undo(), masks[4]) and torch.equal(history.undo(), masks[3])
    history.undo()
    with pytest.raises(ValueError, match="nothing to undo"):
        history.undo()


def test_app_settings_from_command_line_then_environment():
    env = {"HEADPRUNE_MODEL": "/m", "HEADPRUNE_DATA": "/d.csv", "HEADPRUNE_LIVE_EXAMPLES": "32"}
    start = lambda settings: {k: settings[k] for k in ("model", "data", "live_examples", "auto_live")}  # noqa: E731
    assert start(app_settings([], env)) == {"model": "/m", "data": "/d.csv", "live_examples": 32, "auto_live": False}
    assert start(app_settings(["--model", "x", "--live-examples", "8"], env)) == {
        "model": "x", "data": "/d.csv", "live_examples": 8, "auto_live": False}
    assert start(app_settings([], {})) == {"model": "minilm-tweets", "data": "tweets", "live_examples": 256,
                                           "auto_live": True}
    served = app_settings(["--served", "--data-root", "/srv/d"], {})
    assert served["served"] is True and served["roots"]["data_root"] == "/srv/d" and app_settings([], {})["served"] is None
    assert app_settings(["--local"], {})["served"] is False
    with pytest.raises(ValueError, match="whole number"):
        app_settings([], {"HEADPRUNE_LIVE_EXAMPLES": "many"})
