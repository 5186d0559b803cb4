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

    def pointer(self, width: int = 72) -> str:
        """The expression with a caret under the offending column, for terminal output; a long text is
        shown as a window of about `width` characters around the column, "…" marking what is cut."""
        if self.text is None or self.column is None:
            return ""
        text, col = self.text.replace("\n", " ").replace("\t", " "), self.column - 1
        if len(text) <= width:
            return f"  {text}\n  {' ' * col}^"
        start = max(0, min(col - width // 2, len(text) - width))
        window = text[start : start + width]
        head, tail = ("…" if start > 0 else ""), ("…" if start + width < len(text) else "")
        return f"  {head}{window}{tail}\n  {' ' * (len(head) + col - start)}^"
