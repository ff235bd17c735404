"""Shared fixtures: offline settings, a seeded random state per test, one thread where timing-free tests run faster."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state (tiny models and batches are seeded too)."""
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Tiny models train much faster on one thread than on cores shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
