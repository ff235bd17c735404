"""Recovery fine-tuning of a physically pruned model, with knowledge distillation from the dense model.

Pruning usually costs accuracy; a short fine-tune on the task's training data wins most of it back
(Michel et al. 2019; Voita et al. 2019). `recover` trains a copy of the pruned model (so each step is cheaper
than the dense model's) with the loss

    L = (1 − α) · L_task + α · T² · KL(softmax(z_teacher / T) ‖ softmax(z_student / T))

(Hinton, Vinyals, Dean 2015, *Distilling the Knowledge in a Neural Network*; the T² keeps the gradient scale
independent of T), the KL taken per example for classifiers and per predicted token for language models.
LoRA (Hu et al. 2021) via `peft` trains low-rank updates of the attention and MLP projections instead of all
weights, for large decoders, and is merged into the weights at the end.

The loop is `headprune.train.train`; this module adds the distillation loss, LoRA, checkpoints on disk
(`step-00000123/` folders: the weights written by `save_pruned`, `trainer_state.pt` with the optimizer,
scheduler, RNG states and step, and `checkpoint.json`), resuming, and data-parallel runs through Accelerate:
under `torchrun` / `accelerate launch` the same call trains with DDP and only rank 0 writes.
"""
from __future__ import annotations

import copy
import io
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from . import distributed
from .atomic import atomic_directory, atomic_write_bytes, atomic_write_text
from .evaluate import IGNORE_INDEX, evaluate

Progress = Callable[[float, str], None]
CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.pt"
INFO_FILE = "checkpoint.json"
KEEP_CHECKPOINTS = 2
LORA_ALPHA_PER_RANK = 2  # lora_alpha = 2 · r, the usual choice


# ------------------------------------------------------------------------------------------ the loss
def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                    task: str, temperature: float) -> torch.Tensor:
    """T² · KL(p_teacher ‖ p_student) at temperature T, averaged over examples (classifier) or predicted tokens.

    classification: logits (B, C). causal-lm: logits (B, T, V), position t predicts token t+1, counted where
    labels[:, t+1] ≠ -100. masked-lm: logits (B, T, V), counted where labels ≠ -100.
    """
    if task == "causal-lm":
        student_logits, teacher_logits, labels = student_logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:]
    if task != "classification":
        where = labels.reshape(-1) != IGNORE_INDEX  # (B*T,)
        student_logits = student_logits.reshape(-1, student_logits.shape[-1])[where]  # (N, V)
        teacher_logits = teacher_logits.reshape(-1, teacher_logits.shape[-1])[where]  # (N, V)
        if student_logits.shape[0] == 0:
            return student_logits.sum() * 0.0
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
    return kl * temperature ** 2


def distillation_loss_fn(teacher: torch.nn.Module, *, task: str, temperature: float = 2.0, alpha: float = 0.5):
    """A `loss_fn(model, batch)` for `headprune.train.train`: (1 − α)·task loss + α·T²·KL to `teacher`."""
    if temperature <= 0:
        raise ValueError(f"the distillation temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (the distillation share of the loss) must lie in [0, 1], got {alpha}")

    def loss_fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        out = model(**batch)
        with torch.no_grad():
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            teacher_logits = teacher(**inputs).logits
        kd = distillation_kl(out.logits, teacher_logits, batch["labels"], task, temperature)
        return (1.0 - alpha) * out.loss + alpha * kd if alpha < 1.0 else kd

    return loss_fn


# ------------------------------------------------------------------------------------------- LoRA
def lora_targets(model: torch.nn.Module) -> list[str]:
    """Full names of the non-empty linear layers (nn.Linear / GPT-2 Conv1D) inside the Transformer blocks."""
    from transformers.pytorch_utils import Conv1D

    from .arch import blocks

    inside = {id(m) for block in blocks(model) for m in block.modules()}
    names = []
    for name, module in model.named_modules():
        if id(module) in inside and isinstance(module, (torch.nn.Linear, Conv1D)) and module.weight.numel() > 0:
            names.append(name)
    return names


def _with_lora(model: torch.nn.Module, rank: int):
    """`model` wrapped by peft with LoRA adapters on `lora_targets`; a classifier's head is trained in full."""
    from peft import LoraConfig, get_peft_model

    from .arch import family_of

    head = [name for name in ("classifier", "score", "pre_classifier") if hasattr(model, name)]
    config = LoraConfig(r=rank, lora_alpha=LORA_ALPHA_PER_RANK * rank, lora_dropout=0.0,
                        target_modules=lora_targets(model), modules_to_save=head or None,
                        fan_in_fan_out=family_of(model) == "gpt2")
    return get_peft_model(model, config)


# ------------------------------------------------------------------------------------- checkpoints
def checkpoints(directory: str | Path) -> list[Path]:
    """Complete checkpoints in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and (p / INFO_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]) if p.name[len(CHECKPOINT_PREFIX):].isdigit() else -1)


def _save_checkpoint(directory: Path, state: dict, model, settings: dict, adapter: dict | None) -> Path:
    """Write `directory/step-N/` atomically and drop all but the newest `KEEP_CHECKPOINTS`."""
    from .prune import save_pruned

    step = int(state["step"])
    target = directory / f"{CHECKPOINT_PREFIX}{step:08d}"
    payload = dict(state)
    if adapter is not None:
        payload["adapter"] = adapter
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_directory(target) as tmp:
        if adapter is None:
            save_pruned(model, tmp / "model")
        atomic_write_bytes(tmp / STATE_FILE, buffer.getvalue())
        atomic_write_text(tmp / INFO_FILE, json.dumps({"step": step, "settings": settings}, indent=2) + "\n")
    for old in checkpoints(directory)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _load_checkpoint(path: Path, model, settings: dict, lora: bool) -> dict:
    """Restore `model`'s weights from checkpoint `path` and return its training state (checked against `settings`)."""
    from .prune import kept_mask, load_pruned

    info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
    saved = info.get("settings", {})
    changed = [f"{k} {saved.get(k)!r} ≠ {v!r}" for k, v in settings.items() if saved.get(k) != v]
    if changed:
        raise ValueError(f"the checkpoint {path} was made with other settings ({'; '.join(changed[:3])}); "
                         "resume with the same settings, or start afresh without resume")
    # optimizer / scheduler state dicts, RNG byte tensors and (LoRA) adapter tensors: all plain data
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    if lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, state.pop("adapter"))
    else:
        saved_model = load_pruned(path / "model")
        if not torch.equal(kept_mask(saved_model), kept_mask(model)):
            raise ValueError(f"the checkpoint {path} holds a model with other heads than this one")
        with torch.no_grad():
            for name, tensor in saved_model.state_dict().items():
                model.state_dict()[name].copy_(tensor)
    return state


# -------------------------------------------------------------------------------------- recover
def recover(
    model: torch.nn.Module,
    train_batches,
    *,
    teacher: torch.nn.Module | None = None,
    distill: bool = True,
    temperature: float = 2.0,
    alpha: float = 0.5,
    epochs: int = 1,
    max_steps: int | None = None,
    lr: float = 5e-5,
    lora: bool = False,
    lora_rank: int = 8,
    grad_accum: int = 1,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    should_stop: Callable[[], bool] | None = None,
    progress: Progress | None = None,
    val_batches=None,
    test_batches=None,
) -> tuple[torch.nn.Module, dict]:
    """Fine-tune a copy of the pruned `model` on `train_batches`; returns (trained copy, report).

    model: the physically pruned model (`headprune.prune(dense, keep)`); it is not modified.
    teacher: the dense model for distillation (needed when `distill`; not modified). Loss: see the module
    docstring (α = `alpha` is the distillation share, T = `temperature`). `lora=True` trains rank-`lora_rank`
    adapters on the blocks' linear layers (merged at the end). One step = `grad_accum` batches per process.
    `checkpoint_every` N steps (and on `should_stop()` or Ctrl-C) a checkpoint goes to `checkpoint_dir`;
    `resume=True` continues from the newest one there (same settings required; none there = a fresh start)
    and ends with the same weights as an uninterrupted run. `should_stop()` is asked before every step:
    True saves a checkpoint and returns at once with `report["stopped"] = True` (no evaluation after).
    Under torchrun / accelerate launch: DDP via Accelerate, only rank 0 writes checkpoints.

    The report: `before` / `after` (and `dense`, with a teacher) → {"val", "test"} metrics from
    `headprune.evaluate.evaluate`; `steps`, `start_step`, `losses`, `mean_loss`, `final_loss`,
    `train_seconds`, `seconds`, `stopped`, `checkpoint` (newest path or None), `settings`, `world_size`.
    """
    from .arch import parameter_count, task_of
    from .prune import kept_mask
    from .train import train

    started = time.perf_counter()
    train_batches = list(train_batches)
    if not train_batches:
        raise ValueError("nothing to fine-tune on: no training batches")
    if distill and teacher is None:
        raise ValueError("distillation needs the dense model: pass teacher=<the unpruned model>, or distill=False")
    if (checkpoint_every or resume) and checkpoint_dir is None:
        raise ValueError("checkpoints and resuming need a checkpoint_dir")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be ≥ 1, got {checkpoint_every}")
    if lora and lora_rank < 1:
        raise ValueError(f"the LoRA rank must be ≥ 1, got {lora_rank}")
    task = task_of(model)
    accelerator = distributed.accelerator()
    main = accelerator.is_main_process
    report_progress = progress if main else None
    device = accelerator.device

    def say(fraction: float, message: str) -> None:
        if report_progress is not None:
            report_progress(fraction, message)

    student = copy.deepcopy(model).to(device)
    for param in student.parameters():  # heads pruned to nothing leave empty tensors: nothing to train, and
        param.requires_grad_(param.numel() > 0)  # DDP must not wait for their (absent) gradients
    if teacher is not None and distill:
        teacher_params = next(teacher.parameters(), None)
        if teacher_params is not None and teacher_params.device != device:
            teacher = copy.deepcopy(teacher).to(device)  # never move the caller's shared model
        teacher.eval()
    evaluations = {"before": {}, "after": {}, "dense": {}}
    named = [(split, batches) for split, batches in (("val", val_batches), ("test", test_batches)) if batches]

    def evaluate_all(which: str, what) -> None:
        for split, batches in named:
            say(0.0 if which != "after" else 1.0, f"evaluating {which} on {split}")
            evaluations[which][split] = evaluate(what, batches, task=task)

    evaluate_all("before", student)
    if teacher is not None and distill:
        evaluate_all("dense", teacher)
    settings = {"seed": seed, "lr": lr, "epochs": epochs, "max_steps": max_steps, "distill": distill,
                "temperature": temperature if distill else None, "alpha": alpha if distill else None,
                "lora": lora, "lora_rank": lora_rank if lora else None, "grad_accum": grad_accum,
                "world_size": accelerator.num_processes, "train_batches": len(train_batches),
                "heads": kept_mask(model).int().tolist()}
    trainee = _with_lora(student, lora_rank) if lora else student
    resume_state, resumed_from = None, None
    if resume:
        found = checkpoints(checkpoint_dir)
        if found:
            resumed_from = found[-1]
            resume_state = _load_checkpoint(resumed_from, trainee, settings, lora)
            say(0.0, f"resuming from {resumed_from.name}")
    last_checkpoint: list[Path] = []

    def on_checkpoint(state: dict) -> None:
        adapter = None
        if lora:
            from peft import get_peft_model_state_dict

            adapter = get_peft_model_state_dict(trainee)
        last_checkpoint.append(_save_checkpoint(Path(checkpoint_dir), state, student, settings, adapter))

    loss_fn = distillation_loss_fn(teacher, task=task, temperature=temperature, alpha=alpha) if distill else None
    summary = train(trainee, train_batches, epochs=epochs, lr=lr, seed=seed, loss_fn=loss_fn, max_steps=max_steps,
                    grad_accum=grad_accum, should_stop=should_stop, checkpoint_every=checkpoint_every,
                    on_checkpoint=on_checkpoint if checkpoint_dir is not None else None, resume=resume_state,
                    accelerator=accelerator, progress=lambda f, m: say(f, m))
    accelerator.free_memory()  # drop Accelerate's references to the wrapped model
    if lora:
        student = trainee.merge_and_unload()
    if not summary["stopped"]:
        evaluate_all("after", student)
    report = {
        "steps": summary["steps"], "start_step": summary["start_step"], "epochs": epochs,
        "losses": summary["losses"], "mean_loss": summary["mean_loss"], "final_loss": summary["final_loss"],
        "train_seconds": summary["seconds"], "stopped": summary["stopped"],
        "resumed_from": str(resumed_from) if resumed_from else None,
        "checkpoint": str(last_checkpoint[-1]) if last_checkpoint else None,
        "before": evaluations["before"], "after": evaluations["after"], "dense": evaluations["dense"],
        "settings": {k: v for k, v in settings.items() if k != "heads"},
        "heads_kept": int(kept_mask(student).sum()), "parameters": parameter_count(student),
        "world_size": accelerator.num_processes, "seconds": time.perf_counter() - started,
    }
    return student.eval(), report
