"""Exceptions users see. Each carries a message that says what is wrong and where."""

from __future__ import annotations


class AutolossError(Exception):
    """Base class: the CLI turns these into one line on stderr and exit code 2."""


class ExprError(AutolossError, ValueError):
    """A malformed or ill-typed loss expression. `column` is 1-based where known."""

    def __init__(self, message: str, column: int | None = None, text: str | None = None):
        self.column = column
        self.text = text
        where = f" (column {column})" if column is not None else ""
        super().__init__(f"{message}{where}")

    def pointer(self) -> str:
        """The expression with a caret under the offending column, for terminal output."""
        if self.text is None or self.column is None:
            return ""
        return f"  {self.text}\n  {' ' * (self.column - 1)}^"
