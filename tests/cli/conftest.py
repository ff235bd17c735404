"""A tiny classifier saved to disk, a review CSV and a mask for the sub-commands' end-to-end tests."""
import pytest
import torch
from helpers.texts import REVIEWS as ROWS
from helpers.tiny import bert_tokenizer, save, tiny_bert

from headprune.model.schema import write_mask


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    """A tiny BERT (2 layers x 4 heads) folder, a 30-row CSV, and a mask keeping head 3 of layer 0 and all of
    layer 1."""
    root = tmp_path_factory.mktemp("cli")
    tok = bert_tokenizer(root / "tok")
    model = tiny_bert(tok, label_names=["negative", "neutral", "positive"])
    folder = save(model, tok, root / "model")
    csv = root / "reviews.csv"
    csv.write_text("review,sentiment\n" + "\n".join(ROWS * 3) + "\n")
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, :3] = False
    write_mask(root / "mask.json", keep, model, model_id=str(folder))
    return folder, csv, root / "mask.json"


@pytest.fixture(scope="module")
def split_csv(tmp_path_factory):
    """The same rows with a `split` column: 30 train, 10 validation, 10 test examples."""
    path = tmp_path_factory.mktemp("splits") / "reviews.csv"
    rows = [f"{r},train" for r in ROWS * 3] + [f"{r},validation" for r in ROWS] + [f"{r},test" for r in ROWS]
    path.write_text("review,sentiment,split\n" + "\n".join(rows) + "\n")
    return path
