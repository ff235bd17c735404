"""BERT-style encoders: BERT, RoBERTa (XLM-R, CamemBERT) and ELECTRA share one block layout (post-norm)."""
from __future__ import annotations

from torch import nn

from ..adapters import Adapter, ClassifierTail


def _counts(attn: nn.Module, n_q: int, n_kv: int, head_dim: int) -> None:
    attn.num_attention_heads = n_q
    attn.all_head_size = n_q * head_dim


def _feed_forward(block: nn.Module, hidden):
    return block.output(block.intermediate(hidden), hidden)


_TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37)
_COMMON = dict(
    layers="encoder.layer",
    attention="attention.self",
    q="attention.self.query",
    k="attention.self.key",
    v="attention.self.value",
    o="attention.output.dense",
    o_inside_attention=False,
    post_norm=True,
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
    update_counts=_counts,
)

ADAPTERS = (
    Adapter(family="bert", model_types=("bert",), **_COMMON, tiny=_TINY,
            classifier_tail=ClassifierTail("attention.output", _feed_forward,
                                           lambda model, h: model.classifier(model.base_model.pooler(h)))),
    Adapter(family="roberta", model_types=("roberta", "xlm-roberta", "camembert"), **_COMMON,
            position_offset=lambda config: int(getattr(config, "pad_token_id", 1) or 0) + 1,
            tiny={**_TINY, "pad_token_id": 1},
            classifier_tail=ClassifierTail("attention.output", _feed_forward, lambda model, h: model.classifier(h))),
    Adapter(family="electra", model_types=("electra",), **_COMMON, tiny={**_TINY, "embedding_size": 32},
            classifier_tail=ClassifierTail("attention.output", _feed_forward, lambda model, h: model.classifier(h))),
)
