"""autoloss: discover loss functions for object detectors (the CSE-Autoloss method).

Importing the package is cheap: torch and sympy load when a loss is first evaluated or printed.
"""

from autoloss.errors import AutolossError, ExprError
from autoloss.loss import Loss

__all__ = ["AutolossError", "ExprError", "Loss"]
__version__ = "0.1.0"
