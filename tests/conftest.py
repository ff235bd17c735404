"""Shared fixtures: offline settings, a seeded random state per test, one thread where timing-free tests run
faster, and the tiny tokenizers, workbenches and reports that tests in several directories use. Helpers
(tiny models and workspaces, masks, texts) are in `helpers/`; fixtures of one directory in its conftest.py."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state of torch, `random` and numpy (tiny models and batches are
    seeded too)."""
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)


@pytest.fixture
def one_thread():
    """Tiny models train much faster on one thread than on cores shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bert_tok(tmp_path_factory):
    """The WordPiece tokenizer of the tiny BERT models (helpers.tiny.bert_tokenizer)."""
    from helpers.tiny import bert_tokenizer

    return bert_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def classifier_bench(tmp_path_factory):
    """A Workbench over a tiny BERT classifier saved to disk and 80 rows of a 3-class CSV."""
    from helpers.tiny import tiny_workspace

    from headprune.workbench import Workbench, open_workload

    model_dir, data = tiny_workspace(tmp_path_factory.mktemp("examples"), rows=80)
    return Workbench(open_workload(str(model_dir), str(data), batch_size=16))


@pytest.fixture(scope="module")
def lm_bench(tmp_path_factory):
    """A Workbench over a tiny GPT-2 saved to disk and 24 texts of 3-10 words."""
    import pandas as pd
    from helpers.tiny import WORDS, save, tiny_gpt2, word_tokenizer

    from headprune.workbench import Workbench, open_workload

    folder = tmp_path_factory.mktemp("lm")
    tokenizer = word_tokenizer()
    save(tiny_gpt2(tokenizer), tokenizer, folder / "gpt2")
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(3, 10))) for _ in range(24)]
    pd.DataFrame({"text": texts}).to_csv(folder / "text.csv", index=False)
    return Workbench(open_workload(str(folder / "gpt2"), str(folder / "text.csv"), batch_size=5))


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny classifier and CSV, a mask, a scores file, and the dashboard's kind of workbench over them (the
    live set: a seeded sample of 64 rows, batches of 64)."""
    from helpers.tiny import tiny_workspace

    from headprune.model.schema import write_mask
    from headprune.workbench import Workbench, open_workload

    root = tmp_path_factory.mktemp("report")
    model_dir, data = tiny_workspace(root)
    bench = Workbench(open_workload(str(model_dir), str(data), split=None, default_split="validation", limit=64,
                                    batch_size=64))
    keep = torch.ones(bench.shape, dtype=torch.bool)
    keep[0, :2] = keep[1, 3] = False
    write_mask(root / "mask.json", keep, bench.model, model_id=bench.workload.loaded.model_id)
    return root, bench, keep
