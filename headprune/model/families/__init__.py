"""One module per family group; `FAMILIES` is the registry `headprune.model.adapters` reads.

To add a family: write (or extend) a module here with its `Adapter`, list it below, and add it to the tiny-model
tests (`tests/model/test_families.py` runs every adapter's tiny config through masking, pruning and saving).
"""
from . import bert, distilbert, gpt2, llama, vit

FAMILIES = (*bert.ADAPTERS, distilbert.ADAPTER, gpt2.ADAPTER, *llama.ADAPTERS, vit.ADAPTER)
