"""What a mask did to each example: per-example outputs of one evaluation, and a pure comparison of two.

`ExampleOutputs` come from the same losses an evaluation already computes (`batch_metrics(..., examples=True)`,
then `example_outputs`), so the live evaluator keeps them without a second pass. `compare_examples` says which
examples flipped (fixed: wrong before, right after; broken: the reverse; changed: wrong both times, another
wrong answer), whose loss moved most and, for language models, which tokens' log-probabilities moved most.
`responsible_heads` asks, for one example, which removed head's return would lower its loss most (exact: one
pass with a gate row per candidate, `gated` with per-example gates).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..core.errors import UserError
from ..core.records import Record
from ..core.types import Task
from ..model.forward import forward_logits, model_device, to_device
from ..model.intervene import gated, inference_view
from ..model.layout import task_of, to_keep_tensor
from .metrics import per_example_loss


@dataclass(frozen=True)
class ExampleOutputs(Record):
    """Per-example outputs of one evaluation, in batch order (N examples).

    loss: (N,) cross-entropy (language models: mean over the example's scored tokens). Classification:
    label, prediction (N,) int64 and gold_prob (N,) the probability of the gold label. Language models:
    token_logprob, per example a (T,) tensor (its batch's width) of log p(gold token at position t), NaN where
    nothing is scored (causal: position 0 and padding).
    """

    task: Task
    loss: torch.Tensor
    label: torch.Tensor | None = None
    prediction: torch.Tensor | None = None
    gold_prob: torch.Tensor | None = None
    token_logprob: tuple[torch.Tensor, ...] | None = None

    @property
    def n(self) -> int:
        return int(self.loss.shape[0])


def example_outputs(total: dict) -> ExampleOutputs:
    """`ExampleOutputs` from sums accumulated with `batch_metrics(..., examples=True)`."""
    pieces = total.get("examples") if total else None
    if not pieces:
        raise UserError("no per-example outputs: accumulate batch_metrics(..., examples=True)")
    joined = {key: torch.cat([p[key] for p in pieces]) for key in pieces[0] if key != "token_logprob"}
    rows = tuple(row for p in pieces for row in p["token_logprob"]) if "token_logprob" in pieces[0] else None
    return ExampleOutputs(task=total["task"], token_logprob=rows, **joined)


# ------------------------------------------------------------------------------------------ comparison
@dataclass(frozen=True)
class Flip(Record):
    """An example whose prediction changed. kind: fixed (wrong → right), broken (right → wrong), changed
    (wrong → another wrong). index: the example's id (the caller's `index`, e.g. its row in the data)."""

    index: int
    text: str
    label: str
    before: str
    after: str
    gold_prob_before: float
    gold_prob_after: float
    kind: str


@dataclass(frozen=True)
class TokenChange(Record):
    """One token's log-probability (natural log) before and after; position counts the example's tokens."""

    index: int
    position: int
    token: str
    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass(frozen=True)
class LossMove(Record):
    """An example's loss before and after; for language models with every token's change (NaN where the
    token is not scored, e.g. a causal model's first token)."""

    index: int
    text: str
    before: float
    after: float
    tokens: tuple[TokenChange, ...] = ()

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass(frozen=True)
class ExampleChanges(Record):
    """What changed between two evaluations of the same examples (`compare_examples`).

    fixed / broken / changed: every flipped example (classification), largest gold-probability change first.
    loss_movers: the `top` examples whose loss moved most. token_movers (language models): the `top` tokens
    whose log-probability moved most, over all examples.
    """

    task: Task
    n: int
    fixed: tuple[Flip, ...]
    broken: tuple[Flip, ...]
    changed: tuple[Flip, ...]
    loss_movers: tuple[LossMove, ...]
    token_movers: tuple[TokenChange, ...]


def _check_pair(before: ExampleOutputs, after: ExampleOutputs, texts: Sequence[str]) -> None:
    if before.task != after.task or before.n != after.n:
        raise UserError(f"cannot compare {before.n} {before.task} examples with {after.n} {after.task} examples: "
                        "evaluate both masks on the same examples")
    if len(texts) != before.n:
        raise UserError(f"{len(texts)} texts for {before.n} examples: pass one text per example, in batch order")


def _flips(before: ExampleOutputs, after: ExampleOutputs, texts, index, names) -> dict[str, list[Flip]]:
    out: dict[str, list[Flip]] = {"fixed": [], "broken": [], "changed": []}
    moved = (before.prediction != after.prediction).nonzero().flatten().tolist()
    for i in moved:
        gold, was, now = int(before.label[i]), int(before.prediction[i]), int(after.prediction[i])
        kind = "fixed" if now == gold else "broken" if was == gold else "changed"
        out[kind].append(Flip(index=int(index[i]), text=str(texts[i]), label=names(gold), before=names(was),
                              after=names(now), gold_prob_before=float(before.gold_prob[i]),
                              gold_prob_after=float(after.gold_prob[i]), kind=kind))
    for flips in out.values():
        flips.sort(key=lambda f: (-abs(f.gold_prob_after - f.gold_prob_before), f.index))
    return out


def _token_changes(before: ExampleOutputs, after: ExampleOutputs, i: int, index: int,
                   tokens: Callable[[int], Sequence[str]] | None, positions: Sequence[int] | None = None
                   ) -> tuple[TokenChange, ...]:
    """Token changes of example i at `positions`, token texts from `tokens(i)`."""
    a, b = before.token_logprob[i], after.token_logprob[i]
    texts = list(tokens(i)) if tokens is not None else []
    if positions is None:  # every token when their texts are known (NaN where not scored), else the scored ones
        positions = range(len(texts)) if texts else (a.isfinite() & b.isfinite()).nonzero().flatten().tolist()
    nan = float("nan")
    return tuple(TokenChange(index=index, position=t, token=texts[t] if t < len(texts) else "",
                             before=float(a[t]) if t < len(a) else nan, after=float(b[t]) if t < len(b) else nan)
                 for t in positions)


def compare_examples(before: ExampleOutputs, after: ExampleOutputs, texts: Sequence[str], *,
                     index: Sequence[int] | None = None, label_names: Sequence[str] | None = None,
                     tokens: Callable[[int], Sequence[str]] | None = None, top: int = 10) -> ExampleChanges:
    """Compare two evaluations of the same examples (both in batch order; `texts` and `index`, the ids to
    report, in that order too; `tokens(i)`: the display tokens of example i, for language models)."""
    _check_pair(before, after, texts)
    index = list(range(before.n)) if index is None else [int(i) for i in index]
    names = (lambda k: str(label_names[k]) if label_names is not None and 0 <= k < len(label_names) else str(k))
    flips = _flips(before, after, texts, index, names) if before.task == "classification" else \
        {"fixed": [], "broken": [], "changed": []}
    lm = before.token_logprob is not None
    delta = after.loss - before.loss  # (N,)
    order = sorted(range(before.n), key=lambda i: (-abs(float(delta[i])), i))[:top]
    movers = tuple(LossMove(index=index[i], text=str(texts[i]), before=float(before.loss[i]),
                            after=float(after.loss[i]), tokens=_token_changes(before, after, i, index[i], tokens)
                            if lm else ()) for i in order)
    token_movers: tuple[TokenChange, ...] = ()
    if lm:
        found = []  # (|Δ|, example, position)
        for i, (a, b) in enumerate(zip(before.token_logprob, after.token_logprob)):
            change = (b - a).abs().nan_to_num(-1.0)
            for t in change.topk(min(top, change.numel())).indices.tolist():
                if change[t] >= 0:
                    found.append((float(change[t]), i, t))
        found.sort(key=lambda f: (-f[0], f[1], f[2]))
        token_movers = tuple(_token_changes(before, after, i, index[i], tokens, [t])[0] for _, i, t in found[:top])
    return ExampleChanges(task=before.task, n=before.n, fixed=tuple(flips["fixed"]), broken=tuple(flips["broken"]),
                          changed=tuple(flips["changed"]), loss_movers=movers, token_movers=token_movers)


# ------------------------------------------------------------------------------------------ responsible heads
@dataclass(frozen=True)
class HeadEffect(Record):
    """What bringing back one removed head (alone) does to one example: its loss with the head restored vs
    under the mask, and (classification) the prediction then."""

    layer: int
    head: int
    loss_masked: float
    loss_restored: float
    prediction: int | None = None

    @property
    def gain(self) -> float:
        """Loss decrease from restoring the head (> 0: the head helped this example)."""
        return self.loss_masked - self.loss_restored


@torch.inference_mode()
def responsible_heads(model, batch: dict, keep, heads: Sequence[tuple[int, int]] | None = None, *,
                      chunk: int = 32) -> tuple[HeadEffect, ...]:
    """For a one-example `batch`, the effect of restoring each removed head of `keep` alone (default: every
    removed head), most helpful first. Exact: the example is repeated, one gate row per candidate
    (`gated` with (L, B, H) gates), `chunk` rows a pass."""
    keep = to_keep_tensor(keep, model)
    if int(batch["input_ids"].shape[0]) != 1:
        raise UserError("responsible_heads takes a batch of one example")
    heads = [tuple(h) for h in (heads if heads is not None else (~keep).nonzero().tolist())]
    if any(bool(keep[l, h]) for l, h in heads):
        raise UserError("responsible_heads: every candidate must be a removed head of the mask")
    task, device = task_of(model), model_device(model)
    batch = to_device(batch, device)
    rows = [keep] + [keep.clone().index_put_((torch.tensor([l]), torch.tensor([h])), torch.tensor(True))
                     for l, h in heads]
    losses, predictions = [], []
    with inference_view(model) as runner:
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            gates = torch.stack(part, dim=1).float().to(device)  # (L, B, H)
            repeated = {k: v.expand(len(part), *v.shape[1:]) for k, v in batch.items() if torch.is_tensor(v)}
            with gated(runner, gates):
                logits = forward_logits(runner, repeated)
            losses.append(per_example_loss(logits, repeated["labels"], task)[0].float().cpu())
            if task == "classification":
                predictions.append(logits.argmax(-1).cpu())
    loss = torch.cat(losses)
    pred = torch.cat(predictions).tolist() if predictions else [None] * len(rows)
    effects = [HeadEffect(layer=int(l), head=int(h), loss_masked=float(loss[0]), loss_restored=float(loss[k + 1]),
                          prediction=pred[k + 1]) for k, (l, h) in enumerate(heads)]
    return tuple(sorted(effects, key=lambda e: (-e.gain, e.layer, e.head)))
