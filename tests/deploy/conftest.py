"""One ONNX export shared by the export, runtime and latency tests (an export takes seconds)."""
import pytest
from helpers.masks import keep_rows

from headprune.deploy import export_onnx
from headprune.model.tiny import tiny_batch, tiny_model


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """One BERT classifier export with uneven heads and an empty layer (shared: an export takes seconds)."""
    model = tiny_model("bert")
    keep = keep_rows(model, [[], [0, 3], [1, 2, 3]])
    path = tmp_path_factory.mktemp("onnx") / "bert.onnx"
    batches = [tiny_batch(model, seed=s) for s in range(2)]
    return model, keep, export_onnx(model, path, keep, batches=batches, model_id="tiny-bert", meta={"note": "test"})
