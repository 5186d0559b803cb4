"""The functional-equivalence key: dedup on training behaviour, not text (AutoML-Zero's FEC cache).

Training sees a loss only through its gradient, so two expressions whose gradients agree train identically
and get one key: `Add(X,Y)` and `Add(Y,X)`, `Neg(Neg(L))` and `L`, `Sub(1,Div(I,U))` and
`Add(1,Neg(Div(I,U)))`, and also `L` and `Add(L,3)` (a constant offset changes the value, never the
gradient). A positive rescaling `Mul(2,L)` keeps a different key: it changes the effective learning rate.
The key is a hash of the gradients on the fixed moderate rows of the validity probe, quantised to
`probe.key_digits` digits of the array's largest magnitude. Quantising against the array's scale (not each
number's own) keeps float32 noise in tiny values (log(sig(8)) computed two ways) from splitting a key. Two
float32 formulations that differ only by rounding can still straddle a quantisation boundary now and then:
the key is a cache, so a rare miss only costs a recomputation.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import Tensor

from autoloss.checks import probe_batch
from autoloss.checks.config import CheckConfig, resolve_config
from autoloss.loss import Loss

# Non-finite numbers get codes outside the range a quantised finite value can take (|q| <= 10**12).
_NAN, _POS_INF, _NEG_INF = 2**62, 2**62 + 1, -(2**62 + 1)


def quantise(values: np.ndarray, digits: int) -> tuple[str, np.ndarray]:
    """(scale text, integer codes): values / scale rounded to `digits` decimals; -0.0 becomes 0."""
    values = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(values)
    if finite.all():  # the usual case, with no masks to apply (the same codes as the general path)
        scale = float(np.abs(values).max()) if values.size else 0.0
        scale = scale if scale != 0.0 else 1.0
        return f"{scale:.{digits - 1}e}", np.rint(values / scale * 10**digits).astype(np.int64)
    scale = float(np.abs(values[finite]).max()) if finite.any() else 0.0
    if scale == 0.0:
        scale = 1.0
    codes = np.zeros(values.shape, dtype=np.int64)
    codes[finite] = np.rint(values[finite] / scale * 10**digits).astype(np.int64)
    codes[np.isnan(values)] = _NAN
    codes[values == np.inf] = _POS_INF
    codes[values == -np.inf] = _NEG_INF
    # The scale is part of the key (2x a loss is not the loss), at the same precision as the codes.
    return f"{scale:.{digits - 1}e}", codes


def functional_key(
    loss: Loss, config: CheckConfig | None = None, evaluation: tuple[Tensor, Tensor] | None = None
) -> str:
    """`branch:hash` of the loss's rounded gradients on the probe; equal for losses that train alike.

    `evaluation` is `probe_batch.evaluate(loss, config)`, when the caller already has it.
    """
    config = resolve_config(config)
    if evaluation is None:
        with torch.enable_grad():
            evaluation = probe_batch.evaluate(loss, config)
    probe, (_, grad) = probe_batch.validity_part(evaluation, loss, config)
    h = hashlib.blake2b(digest_size=12)
    # Values are left out on purpose: a loss and the loss plus a constant are one candidate.
    rows = grad.numpy()[probe.key_rows.numpy()]  # numpy indexing: a tenth of torch's on these sizes
    scale, codes = quantise(rows, config.probe.key_digits)
    h.update(scale.encode())
    h.update(codes.tobytes())
    return f"{loss.branch}:{h.hexdigest()}"
