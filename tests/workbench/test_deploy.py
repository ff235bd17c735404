"""The Workbench's deploy operations on tiny workloads: loads-in, runtime-safe masks with their exact cost,
latency in PyTorch and ONNX Runtime, and an ONNX export checked on the workload's examples."""
from __future__ import annotations

import pytest
import torch
import transformers
from helpers.tiny import bert_tokenizer, save, tiny_bert, tiny_llama, word_tokenizer

from headprune.core.errors import UserError
from headprune.deploy import read_sidecar, round_to_uniform
from headprune.workbench import Workbench, open_workload

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = ["the movie is good", "this car is bad", "a great tweet", "not fine", "love this movie", "hate the car"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A Workbench over a tiny GQA Llama (3 layers x 6 query heads in 2 KV groups, hidden 48) on 24 texts."""
    root = tmp_path_factory.mktemp("llama")
    tokenizer = word_tokenizer()
    save(tiny_llama(tokenizer), tokenizer, root / "model")
    (root / "text.csv").write_text("text\n" + "\n".join(TEXT * 4) + "\n")
    return Workbench(open_workload(str(root / "model"), str(root / "text.csv"), batch_size=8, max_length=16))


UNEVEN = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 0, 0]], dtype=torch.bool)


def test_runtime_safe_rounds_by_scores_and_measures_the_cost_exactly(llama, tmp_path):
    assert not llama.loads_in(UNEVEN)["transformers"].ok
    assert llama.runtime_safe_blocker(UNEVEN) is None
    made = llama.runtime_safe(UNEVEN, metric="magnitude")
    scores = llama.score("magnitude").scores
    assert torch.equal(made.keep, round_to_uniform(UNEVEN, scores, llama.model).keep)
    assert made.keep.sum(-1).tolist() == [3, 3, 3] and made.uniform.kv_heads_per_layer == 1
    assert made.before == llama.exact(UNEVEN) and made.after == llama.exact(made.keep)
    assert made.after["loss"] != made.before["loss"]
    assert llama.loads_in(made.keep).runtime_safe
    saved = llama.export(made.keep, tmp_path / "safe")  # really loads with plain from_pretrained
    plain = transformers.AutoModelForCausalLM.from_pretrained(saved.path)
    assert plain.config.num_attention_heads == 3 and plain.config.num_key_value_heads == 1


def test_a_bert_mask_has_no_runtime_safe_neighbour_and_says_why(tmp_path):
    tokenizer = bert_tokenizer(tmp_path / "tok")
    save(tiny_bert(tokenizer), tokenizer, tmp_path / "bert")
    (tmp_path / "data.csv").write_text("text,label\n" + "\n".join(f"{t},{i % 3}" for i, t in enumerate(TEXT)) + "\n")
    bench = Workbench(open_workload(str(tmp_path / "bert"), str(tmp_path / "data.csv")))
    one_each = torch.tensor([[1, 0, 0, 0]] * 2, dtype=torch.bool)
    assert "plain transformers: BertConfig has no head_dim" in bench.runtime_safe_blocker(one_each)
    with pytest.raises(UserError, match="no mask near this one loads in every runtime: plain transformers: BertConfig"):
        bench.runtime_safe(one_each)
    seven = torch.ones(2, 4, dtype=torch.bool)
    seven[0, 0] = False
    assert bench.runtime_safe_blocker(seven) is None  # 7 of 8 heads round to all 4 per layer: the dense model
    assert bench.runtime_safe(seven, metric="magnitude").keep.all()


@pytest.mark.slow
def test_measure_in_both_runtimes_shares_one_layout(llama):
    keep = torch.tensor([[1, 1, 1, 0, 0, 0]] * 3, dtype=torch.bool)
    both = llama.measure(keep, batch_size=2, seq_len=8, repeats=2, threads=1, runtime="both")
    assert set(both) == {"torch", "onnxruntime"}
    for name, result in both.items():
        assert {"dense", "pruned", "time_ratio", "flop_ratio", "speedup", "warning", "batch_size", "seq_len",
                "repeats", "threads"} <= set(result), name
        assert (result["batch_size"], result["seq_len"], result["threads"]) == (2, 8, 1)
        assert result["pruned"]["params"] < result["dense"]["params"]
    assert both["onnxruntime"]["flop_ratio"] == pytest.approx(both["torch"]["flop_ratio"])
    assert both["onnxruntime"]["runtime"] == "onnxruntime"
    with pytest.raises(UserError, match="unknown runtime 'tensorrt'; choose one of torch, onnxruntime, both"):
        llama.measure(keep, runtime="tensorrt")


@pytest.mark.slow
def test_export_onnx_checks_parity_on_the_workload_examples(llama, tmp_path):
    done = llama.export_onnx(UNEVEN, tmp_path / "llama.onnx")
    assert done.parity.ok and done.parity.agreement == 1.0 and done.parity.examples == 24
    assert done.meta["parity_examples"].startswith("the first 24 of 24 examples of ")
    assert read_sidecar(done.path)["kept_heads"] == [[0, 1, 2, 3, 4, 5], [0, 1, 2], [0, 1, 3]]
