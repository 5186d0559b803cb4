"""The search spaces (branches, shape rules, random trees) and the named losses."""

from autoloss.spaces.branches import BRANCHES, Branch, branch, check_shapes, infer_branch
from autoloss.spaces.named import DEFAULTS, NAMED

__all__ = ["BRANCHES", "DEFAULTS", "NAMED", "Branch", "branch", "check_shapes", "infer_branch"]
