"""Proxy fidelity: does a cheap proxy rank losses the way the training you care about does?

A panel of loss pairs is trained on a proxy task and on one or more target tasks; rank agreement
(Kendall τ, Spearman ρ with bootstrap CIs, top-k overlap) says how far the proxy's ranking can be trusted.
"""

from autoloss.fidelity.panel import PanelEntry, default_panel, survivors_from_run
from autoloss.fidelity.ranks import rank_agreement
from autoloss.fidelity.tasks import TaskSpec, parse_task, train_panel

__all__ = [
    "PanelEntry",
    "TaskSpec",
    "default_panel",
    "parse_task",
    "rank_agreement",
    "survivors_from_run",
    "train_panel",
]
