"""The validity filter: the cheapest questions, asked before anything is optimised.

1. Is it well-formed for its branch (shape rules: checked when the `Loss` is built)?
2. Does it read the prediction (X; I for reg) and the target (Y / PY, NY, Q; U or E for reg)? A loss blind
   to the label cannot train anything; one blind to the prediction has no gradient.
3. Are its values and gradients finite in float32 on a probe batch with saturated logits (±20) and edge
   boxes (tiny, huge, disjoint, nested)? Detectors meet all of these in training.
4. Behaviourally: does the gradient vanish everywhere, and does swapping a label ever change it?
"""

from __future__ import annotations

from torch import Tensor

from autoloss.checks import probe_batch
from autoloss.checks.config import CheckConfig
from autoloss.checks.probe_batch import Evaluation
from autoloss.checks.probes import Probe
from autoloss.loss import Loss
from autoloss.spaces.branches import branch


def structural_reason(loss: Loss) -> str | None:
    """Why the expression cannot be a loss for its branch, judged from its text alone; None if it can.

    Shape rules need no second look: a `Loss` cannot be built from an expression that breaks them.
    """
    br = branch(loss.branch)
    used = loss.expr.inputs
    if not used & br.prediction:
        return f"does not read the prediction ({'/'.join(sorted(br.prediction))}): it cannot train the model"
    if not used & br.target:
        return f"blind to the label: reads none of {', '.join(sorted(br.target))}"
    return None


def validity(loss: Loss, config: CheckConfig) -> tuple[bool, str, float | None, Evaluation | None]:
    """(passed, reason, score, evaluation); the evaluation (`probe_batch.evaluate`, the whole stacked
    batch) is reused for the functional key and CPV."""
    reason = structural_reason(loss)
    if reason is not None:
        return False, reason, None, None
    evaluation = probe_batch.evaluate(loss, config)
    probe, (values, grad) = probe_batch.validity_part(evaluation, loss, config)
    reason = _finite_reason(values, grad, probe)
    if reason is not None:
        return False, reason, None, None
    if not bool(grad.abs().max() > 0):
        return False, "constant in the prediction: the gradient is zero on every probe row", None, None
    if probe.label_pairs is not None and _label_blind(grad, probe.label_pairs):
        return False, "blind to the label: changing the label never changes the gradient", None, None
    return True, f"well-formed, finite in float32 on {probe.pred.shape[0]} probe rows", None, evaluation


def _finite_reason(values: Tensor, grad: Tensor, probe: Probe) -> str | None:
    moderate = len(probe.key_rows)
    for what, t in (("value", values), ("gradient", grad)):
        rows = t.reshape(t.shape[0], -1)
        bad = ~rows.isfinite().all(dim=1)
        if bool(bad.any()):
            kind = "NaN" if bool(rows.isnan().any()) else "infinite"
            first = int(bad.nonzero()[0, 0])
            where = "an ordinary row" if first < moderate else _edge_name(probe.branch)
            return (
                f"{kind} {what} on {int(bad.sum())} of {rows.shape[0]} probe rows (first: {where}) in float32"
            )
    return None


def _edge_name(branch_name: str) -> str:
    return "an edge box (tiny, huge or disjoint)" if branch_name == "reg" else "a saturated-logit row (±20)"


def _label_blind(grad: Tensor, pairs: tuple[Tensor, Tensor]) -> bool:
    a, b = grad[pairs[0]], grad[pairs[1]]
    tol = 1e-6 * float(grad.abs().max()) + 1e-12
    return not bool(((a - b).abs() > tol).any())
