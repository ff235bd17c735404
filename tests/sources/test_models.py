"""Loading models from folders (headprune.sources.models): classifiers, language models, pruned folders, and
what is refused."""
from __future__ import annotations

import json

import pytest
import torch
from helpers.texts import LABEL2ID
from helpers.texts import SIX_TEXTS as TEXTS
from helpers.tiny import save, tiny_bert, tiny_gpt2, word_tokenizer

from headprune.presets import load_model
from headprune.sources.batches import make_batches
from headprune.sources.models import LoadedModel


def test_load_local_classifier_folder(tmp_path, bert_tok):
    folder = save(tiny_bert(bert_tok, label_names=["negative", "neutral", "positive"]), bert_tok, tmp_path / "clf")
    loaded = load_model(str(folder))
    assert isinstance(loaded, LoadedModel)
    assert (loaded.task, loaded.source, loaded.meta["family"]) == ("classification", "local", "bert")
    assert loaded.label_names == ["negative", "neutral", "positive"]
    assert loaded.label2id == LABEL2ID
    assert not loaded.model.training and next(loaded.model.parameters()).dtype == torch.float32
    out = loaded.model(**{k: v for k, v in make_batches(loaded.tokenizer, TEXTS, "classification")[0].items()})
    assert out.logits.shape == (len(TEXTS), 3)


def test_load_local_causal_and_masked_lm(tmp_path, bert_tok):
    tok = word_tokenizer()
    lm = load_model(str(save(tiny_gpt2(tok), tok, tmp_path / "gpt2")))
    assert (lm.task, lm.label_names) == ("causal-lm", None)
    assert lm.tokenizer.pad_token == "<eos>" and lm.model.config.pad_token_id == tok.eos_token_id
    mlm = load_model(str(save(tiny_bert(bert_tok, head="masked-lm"), bert_tok, tmp_path / "mlm")))
    assert mlm.task == "masked-lm"


def test_bad_model_specs(tmp_path, bert_tok):
    with pytest.raises(ValueError, match="no such model folder: .*missing"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not available offline: someone/some-model"):
        load_model("someone/some-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_model(str(tmp_path / "empty"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        load_model(str(tmp_path / "file.txt"))


def test_unsupported_architecture_names_the_supported_families(tmp_path, bert_tok):
    from transformers import OPTConfig, OPTForCausalLM

    model = OPTForCausalLM(OPTConfig(vocab_size=len(bert_tok), hidden_size=16, num_hidden_layers=1, ffn_dim=16,
                                     num_attention_heads=2, word_embed_proj_dim=16, max_position_embeddings=64))
    folder = save(model, bert_tok, tmp_path / "opt")
    with pytest.raises(ValueError, match="unsupported architecture 'opt'.*bert.*gpt2.*llama"):
        load_model(str(folder))


def test_headless_model_and_remote_code_are_refused(tmp_path, bert_tok):
    from transformers import BertConfig, BertModel

    bare = save(BertModel(BertConfig(vocab_size=len(bert_tok), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16)), bert_tok, tmp_path / "bare")
    with pytest.raises(ValueError, match="no task head .*BertModel"):
        load_model(str(bare))
    folder = save(tiny_bert(bert_tok), bert_tok, tmp_path / "remote")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="ships its own model code") as refused:
        load_model(str(folder))
    assert refused.value.option == "trust_remote_code"


def test_pruned_folder_loads_through_load_pruned(tmp_path, bert_tok):
    from headprune.model.storage import save_pruned
    from headprune.model.surgery import prune

    model = tiny_bert(bert_tok, label_names=["negative", "neutral", "positive"])
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, :3] = False
    folder = save_pruned(prune(model, keep), tmp_path / "pruned", bert_tok)
    loaded = load_model(str(folder))
    assert loaded.task == "classification" and "pruned" in loaded.meta
    batch = make_batches(loaded.tokenizer, TEXTS, "classification")[0]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    from headprune.model.intervene import masked

    with torch.inference_mode(), masked(model, keep):
        expected = model(**inputs).logits
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(**inputs).logits, expected, rtol=1e-4, atol=1e-4)
