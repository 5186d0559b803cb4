"""Run directories: the self-describing record of a search."""

from autoloss.runs.rundir import RunDir, RunDirError

__all__ = ["RunDir", "RunDirError"]
