"""`autoloss train` / `autoloss eval` (being built)."""

COMMANDS: list = []
