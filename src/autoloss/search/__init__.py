"""The CSE-Autoloss search: evolution through the CPV/MOS funnel to proxy trainings."""

from autoloss.search.config import BUDGETS, ConfigError, SearchConfig, budget_config, validate
from autoloss.search.driver import Search

__all__ = ["BUDGETS", "ConfigError", "Search", "SearchConfig", "budget_config", "validate"]
