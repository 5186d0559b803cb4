"""A run directory, `runs/<name>/`:

- `config.yaml`        the resolved configuration, written once;
- `events.jsonl`       one line per candidate (append-only, flushed line by line);
- `evaluations.jsonl`  one line per finished proxy training: the cache that makes resume exact;
- `checkpoint.json`    engine state, RNG state and caches after the last finished unit (versioned,
                       written atomically: tmp + rename, so a kill never leaves half a file);
- `hall_of_fame.csv`, `best/`, `summary.json`, `report.md` and plots: the results.

No pickles of live objects: everything is JSON, YAML or CSV that a person can read.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from autoloss.errors import AutolossError

CHECKPOINT_VERSION = 2  # 2: rung histories in the engines


class RunDirError(AutolossError):
    """A run directory that cannot be used as asked (exists, missing, or from another version)."""


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # --- creation -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any], overwrite: bool = False) -> RunDir:
        path = Path(path)
        if path.exists() and any(path.iterdir()):
            if not overwrite:
                raise RunDirError(
                    f"run directory {path} already exists; pass --overwrite to replace it, "
                    f"`autoloss resume {path}` to continue it, or choose another --out"
                )
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path)
        import yaml

        _atomic_write(run.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not (run.path / "config.yaml").is_file():
            raise RunDirError(f"{path} is not an autoloss run directory (no config.yaml)")
        return run

    def config(self) -> dict[str, Any]:
        import yaml

        try:
            return yaml.safe_load((self.path / "config.yaml").read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise RunDirError(f"{self.path / 'config.yaml'} is not valid YAML: {exc}") from None

    # --- append-only logs ---------------------------------------------------------------------
    def append(self, name: str, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with open(self.path / name, "a", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(clean(r), allow_nan=False, default=_jsonable) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read(self, name: str) -> list[dict[str, Any]]:
        """All complete lines; a line cut short by a kill mid-write is ignored."""
        path = self.path / name
        if not path.is_file():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def rewrite(self, name: str, records: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(clean(r), allow_nan=False, default=_jsonable) + "\n" for r in records)
        _atomic_write(self.path / name, text)

    # --- checkpoint -----------------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        _atomic_write(
            self.path / "checkpoint.json",
            json.dumps(clean({"version": CHECKPOINT_VERSION, **state}), allow_nan=False, default=_jsonable),
        )

    def load_checkpoint(self) -> dict[str, Any] | None:
        path = self.path / "checkpoint.json"
        if not path.is_file():
            return None
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunDirError(
                f"{path} is corrupt ({exc}); it is written atomically, so this is not from a kill"
            ) from None
        if state.get("version") != CHECKPOINT_VERSION:
            raise RunDirError(
                f"{path} has checkpoint version {state.get('version')}; this autoloss reads version "
                f"{CHECKPOINT_VERSION}. Resume it with the autoloss release that wrote it, "
                "or start a new run."
            )
        return state

    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, text)
        return target


def clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
