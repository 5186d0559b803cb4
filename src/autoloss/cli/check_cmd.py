"""`autoloss check` (placeholder until the filters land)."""

from __future__ import annotations

COMMANDS: list = []
