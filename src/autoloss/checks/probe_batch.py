"""One forward+backward per candidate for validity, the functional key and CPV.

The validity probe (moderate rows, label-swapped twins, saturated extremes) and the branch's CPV grid are
stacked into one batch: rows never interact (Softmax and Dot act along one row's class axis), so each
filter reads its own rows of a single evaluation. A screened candidate used to pay two evaluations (one
for validity and the key, one for CPV); the tensors are tiny, so the cost is the number of torch calls,
not the rows, and the shared batch halves it for every candidate that reaches CPV.

Every entry point (the pipeline, `validity`, `functional_key`, `cpv`) evaluates this same batch, so a
loss's numbers — and its key — do not depend on which of them asked first.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from autoloss.checks.config import CheckConfig, CPVConfig, ProbeConfig
from autoloss.checks.probes import Probe, forward_backward, validity_probe
from autoloss.loss import Loss

Evaluation = tuple[Tensor, Tensor]  # (values, gradient w.r.t. the prediction) on the whole batch


@dataclass(frozen=True)
class ProbeBatch:
    """The stacked probe; rows [0, split) are the validity probe's, rows [split, end) the CPV grid's."""

    probe: Probe
    validity: Probe
    split: int


def cpv_probe(branch: str, config: CPVConfig) -> Probe:
    """The branch's CPV grid as a probe (built and cached by the CPV modules)."""
    from autoloss.checks import cpv_cls, cpv_reg

    if branch == "cls-softmax":
        return cpv_cls.softmax_grid(config)[0]
    if branch == "cls-sigmoid":
        return cpv_cls.sigmoid_grid(config)[0]
    return cpv_reg.reg_grid(config).probe


@lru_cache(maxsize=16)
def probe_batch(branch: str, probe_config: ProbeConfig, cpv_config: CPVConfig) -> ProbeBatch:
    first = validity_probe(branch, probe_config)
    second = cpv_probe(branch, cpv_config)
    if first.pred.shape[1:] != second.pred.shape[1:] or first.fixed.keys() != second.fixed.keys():
        raise ValueError(f"the validity and CPV probes of {branch} do not stack")  # a programming error
    fixed = {k: torch.cat([first.fixed[k], second.fixed[k]]) for k in first.fixed}
    stacked = Probe(branch, torch.cat([first.pred, second.pred]), fixed, first.key_rows, first.label_pairs)
    return ProbeBatch(stacked, first, first.pred.shape[0])


_BY_CONFIG: dict[tuple[str, int], tuple[CheckConfig, ProbeBatch]] = {}


def _batch(branch: str, config: CheckConfig) -> ProbeBatch:
    """`probe_batch` for this config object, looked up by identity: hashing the configs (every field, on
    each of a candidate's several lookups) cost more than the lookups themselves."""
    hit = _BY_CONFIG.get((branch, id(config)))
    if hit is not None and hit[0] is config:
        return hit[1]
    batch = probe_batch(branch, config.probe, config.cpv)
    if len(_BY_CONFIG) >= 32:
        _BY_CONFIG.clear()
    _BY_CONFIG[(branch, id(config))] = (config, batch)
    return batch


def evaluate(loss: Loss, config: CheckConfig) -> Evaluation:
    """The loss's values and gradients on the whole stacked batch."""
    return forward_backward(loss, _batch(loss.branch, config).probe)


def validity_part(evaluation: Evaluation, loss: Loss, config: CheckConfig) -> tuple[Probe, Evaluation]:
    """The validity probe and its rows of `evaluation`."""
    batch = _batch(loss.branch, config)
    values, grad = evaluation
    return batch.validity, (values[: batch.split], grad[: batch.split])


def cpv_part(evaluation: Evaluation, loss: Loss, config: CheckConfig) -> Evaluation:
    """The CPV grid's rows of `evaluation`."""
    split = _batch(loss.branch, config).split
    values, grad = evaluation
    return values[split:], grad[split:]
