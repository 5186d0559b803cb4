"""The CSE-Autoloss search: evolution through the CPV/MOS funnel to proxy trainings.

Named `evolution` rather than `search` so that `autoloss.search`, the function, is never replaced by a
subpackage of the same name when the import system records it on the parent package."""

from autoloss.evolution.config import BUDGETS, ConfigError, SearchConfig, budget_config, validate
from autoloss.evolution.driver import Search

__all__ = ["BUDGETS", "ConfigError", "Search", "SearchConfig", "budget_config", "validate"]
