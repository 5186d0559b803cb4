"""Is a found loss new? The default, a named or published loss, a sum of named parts, a rescaling of a named
loss, or new.

Training sees a loss only through its gradient. `Mul(2,L)` trains as `L` does with twice the learning rate
and `Add(L,3)` exactly as `L` does, so neither is a new loss, though both are new texts. The test is on
what training sees: the loss's gradient on the validity probe's moderate rows (the rows the functional key
reads), against each named loss of its branch. A cosine above `RESCALE_COSINE` says the two push every
prediction the same way, up to a scale: a rescaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from autoloss.checks.config import DEFAULT_CONFIG
from autoloss.checks.probes import forward_backward, validity_probe
from autoloss.evolution.engine import DEFAULT
from autoloss.expr import parse
from autoloss.loss import Loss
from autoloss.spaces.named import NAMED, PUBLISHED, name_of

RESCALE_COSINE = 0.99
# Coarse to fine: a pair is as new as its newest part.
_ORDER = ("default", "published", "named", "named parts", "rescaled", "new")


@dataclass(frozen=True)
class Novelty:
    kind: str  # one of _ORDER
    detail: str = ""  # e.g. "a rescaling of bce (gradient cosine 0.9998 on the probes)"


def classify(text: str, branch: str) -> Novelty:
    """What `text`, a loss of `branch`, is (see the module docstring)."""
    if text == DEFAULT:
        return Novelty("default")
    name = name_of(text)
    published = {n for pair in PUBLISHED.values() for n in pair}
    if name is not None:
        return Novelty("published" if name in published else "named", name)
    parts = _named_parts(text)
    if parts:
        return Novelty("named parts", " + ".join(parts))
    best, cosine = _closest_named(text, branch)
    if best is not None and cosine > RESCALE_COSINE:
        return Novelty("rescaled", f"a rescaling of {best} (gradient cosine {cosine:.4f} on the probes)")
    return Novelty("new")


def kind_of(parts: dict[str, dict[str, str]]) -> str:
    """The kind of a pair from its parts' (`{branch: {"kind": ...}}`): "default" if both are, else that of
    its newest part, where named, published and named parts all count as "named"."""
    newest = max((p["kind"] for p in parts.values()), key=_ORDER.index)
    return "named" if newest in ("published", "named parts") else newest


def _named_parts(text: str) -> list[str]:
    """The names of the terms of a sum whose every term is a named loss (times a positive constant)."""
    tree = parse(text)
    if tree.head != "Add":
        return []
    names = []
    for term in tree.args:
        if term.head == "Mul" and len(term.args) == 2 and term.args[0].is_const and term.args[0].value > 0:
            term = term.args[1]
        name = name_of(term.text)
        if name is None:
            return []
        names.append(name)
    return names


def _closest_named(text: str, branch: str) -> tuple[str | None, float]:
    """The named loss of `branch` whose probe gradient is most parallel to `text`'s, and the cosine."""
    mine = _gradient(text, branch)
    best, best_cos = None, -1.0
    for entry in NAMED.values():
        if entry.branch != branch:
            continue
        theirs = _gradient(entry.text, branch)
        keep = np.isfinite(mine) & np.isfinite(theirs)
        a, b = mine[keep], theirs[keep]
        norm = float(np.linalg.norm(a) * np.linalg.norm(b))
        cosine = float(a @ b) / norm if norm > 0 else -1.0
        if cosine > best_cos:
            best, best_cos = entry.name, cosine
    return best, best_cos


@lru_cache(maxsize=256)
def _gradient(text: str, branch: str) -> np.ndarray:
    probe = validity_probe(branch, DEFAULT_CONFIG.probe)
    _, grad = forward_backward(Loss.parse(text, branch), probe)
    return grad.numpy()[probe.key_rows.numpy()].astype(np.float64).ravel()
