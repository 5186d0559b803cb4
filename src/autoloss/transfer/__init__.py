"""Transfer evaluation: do losses found on the proxy hold up on other detectors, datasets, schedules?"""

from autoloss.transfer.plan import TransferPlan, plan_transfer
from autoloss.transfer.run import run_transfer

__all__ = ["TransferPlan", "plan_transfer", "run_transfer"]
