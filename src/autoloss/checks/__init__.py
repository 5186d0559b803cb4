"""The cheap filters that screen candidate losses before any detector training (CSE-Autoloss).

validity (well-formed, reads prediction and label, finite in float32) -> dedup (functional key) ->
CPV (convergence property verification on probe grids) -> MOS (model optimisation simulation). Each is a
pure function returning a `Verdict`; `screen` runs them cheapest first and stops at the first rejection.

This package imports torch; `import autoloss` does not import it.
"""

from autoloss.checks.config import CheckConfig, CPVConfig, MOSConfig, ProbeConfig
from autoloss.checks.equivalence import functional_key
from autoloss.checks.pipeline import screen, screen_texts
from autoloss.checks.verdict import STAGES, ScreenResult, Verdict

__all__ = [
    "STAGES",
    "CPVConfig",
    "CheckConfig",
    "MOSConfig",
    "ProbeConfig",
    "ScreenResult",
    "Verdict",
    "functional_key",
    "screen",
    "screen_texts",
]
