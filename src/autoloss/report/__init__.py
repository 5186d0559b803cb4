"""Markdown report and plots of a run directory."""

from autoloss.report.markdown import write_report

__all__ = ["write_report"]
