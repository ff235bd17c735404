"""Data-parallel runs under `torchrun` (gloo on CPU): same results as one process, only rank 0 writes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.texts import REVIEWS as ROWS
from helpers.tiny import bert_tokenizer, save, tiny_bert

from headprune.cli import main
from headprune.core import distributed
from headprune.model.schema import write_mask
from headprune.model.storage import load_pruned

pytestmark = pytest.mark.slow  # each test starts two torchrun processes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    tok = bert_tokenizer(root / "tok")
    model = tiny_bert(tok, label_names=["negative", "neutral", "positive"])
    for module in model.modules():  # no dropout: 1- and 2-process runs draw different dropout masks
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
    folder = save(model, tok, root / "model")
    csv = root / "reviews.csv"  # 30 train rows (8 batches of ≤ 4), 10 validation, 10 test
    rows = [f"{r},train" for r in ROWS * 3] + [f"{r},validation" for r in ROWS] + [f"{r},test" for r in ROWS]
    csv.write_text("review,sentiment,split\n" + "\n".join(rows) + "\n")
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[0, :3] = False
    write_mask(root / "mask.json", keep, model, model_id=str(folder))
    return folder, csv, root / "mask.json"


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "headprune", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def one_process(capsys, args: list[str]) -> dict:
    code = main(args)
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_single_process_helpers_are_no_ops():
    tensor = torch.arange(3.0)
    assert distributed.all_reduce_sum(tensor) is tensor and tensor.tolist() == [0.0, 1.0, 2.0]
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    distributed.barrier()


def test_two_process_finetune_matches_one_process_with_gradient_accumulation(workload, capsys, tmp_path):
    folder, csv, mask = workload
    common = ["finetune", "--model", str(folder), "--data", str(csv), "--mask", str(mask), "--batch-size", "4",
              "--max-steps", "3", "--lr", "1e-3", "--checkpoint-every", "2", "--eval-limit", "8", "--json", "-q"]
    done = torchrun(common + ["--out", str(tmp_path / "two")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1  # only rank 0 prints
    two = json.loads(lines[0])
    assert two["world_size"] == 2 and two["steps"] == 3
    one = one_process(capsys, common + ["--out", str(tmp_path / "one"), "--grad-accum", "2"])
    assert one["world_size"] == 1
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=1e-4)
    assert two["after"]["test"]["loss"] == pytest.approx(one["after"]["test"]["loss"], rel=1e-4)
    a, b = load_pruned(tmp_path / "one").state_dict(), load_pruned(tmp_path / "two").state_dict()
    # key biases get a zero gradient in exact arithmetic (softmax ignores a constant shift), so Adam turns
    # rounding noise into steps of up to lr: compare them only to 3 steps x lr
    assert all(torch.allclose(a[k], b[k], atol=3e-3 if k.endswith("key.bias") else 1e-6) for k in a)
    checkpoint = tmp_path / "two.checkpoints"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["headprune_checkpoints.json", "step-00000002"]  # one writer
    assert sorted(p.name for p in (checkpoint / "step-00000002").iterdir()) == ["checkpoint.json", "model", "trainer_state.pt"]


@pytest.mark.parametrize("metric", ["fisher", "gradient"])
def test_two_process_score_sums_over_all_examples(workload, capsys, tmp_path, metric):
    folder, csv, _ = workload
    args = ["score", "--model", str(folder), "--data", str(csv), "--batch-size", "4", "--metric", metric,
            "--json", "-q"]
    done = torchrun(args + ["--out", str(tmp_path / f"{metric}.json")], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    two = torch.tensor(json.loads(lines[0])["scores"])
    one = torch.tensor(one_process(capsys, args + ["--no-cache"])["scores"])
    assert torch.allclose(two, one, rtol=1e-5)  # a sum (fisher) counted twice would be 2x
    assert json.loads((tmp_path / f"{metric}.json").read_text())["scores"] == two.tolist()
