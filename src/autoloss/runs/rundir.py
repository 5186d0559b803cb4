"""A run directory, `runs/<name>/`:

- `config.yaml`        the resolved configuration, written once;
- `events.jsonl`       one line per candidate (append-only, flushed line by line);
- `evaluations.jsonl`  one line per finished proxy training: the cache that makes resume exact;
- `checkpoint.json`    engine state, RNG state and caches after the last finished unit (versioned,
                       written atomically: tmp + rename, so a kill never leaves half a file);
- `hall_of_fame.csv`, `best/`, `summary.json`, `report.md` and plots: the results.

No pickles of live objects: everything is JSON, YAML or CSV that a person can read.

The journals (`*.jsonl`) are only appended to and fsynced line by line, so a kill can damage at most their
last line: one written in part, with no newline. `read` drops such a torn line (and counts it in `torn`),
and the next `append` cuts it off the file first, so the next record starts on a line of its own; the record
it held is simply recomputed. A complete line that does not parse is not from a kill: `read` refuses it,
naming the file and the line, rather than silently losing what it held. A write that fails (a full disk, a
read-only directory) is a `RunDirError` naming the file, and leaves the file's previous version in place.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from autoloss.errors import AutolossError
from autoloss.runs.failpoints import failpoint

CHECKPOINT_VERSION = 2  # 2: rung histories in the engines
LOCK_NAME = ".lock"  # runs/lock.py: the one process writing this directory


class RunDirError(AutolossError):
    """A run directory that cannot be used as asked (exists, missing, in use, corrupt, or not writable)."""


class RunDirWarning(UserWarning):
    """Something in a run directory was repaired: a torn journal line cut off, a stale lock taken over."""


def _write_failed(what: str, path: Path, exc: OSError, kept: str = "") -> RunDirError:
    """ENOSPC, EROFS, EACCES...: what failed on which file, in one line."""
    return RunDirError(f"cannot {what} {path}: {exc.strerror or exc}{kept}")


def _atomic_write(path: Path, text: str) -> None:
    """tmp + fsync + rename + fsync of the directory: after a kill or a power cut, `path` holds either
    the old text or the new, whole. On a failed write the old file stays and the tmp file goes."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())  # the data is on disk before the rename makes it the file
        failpoint(f"write:{path.name}")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        kept = "; its previous version is kept" if path.exists() else ""
        raise _write_failed("write", path, exc, kept) from None
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable; some systems (Windows, some network file systems) cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        # journal name -> bytes of a torn last line that `read` dropped (cut off by the next `append`)
        self.torn: dict[str, int] = {}

    # --- creation -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any], overwrite: bool = False) -> RunDir:
        path = Path(path)
        # The lock of the process creating it may already be there: it is not content, and it stays.
        content = [p for p in path.iterdir() if p.name != LOCK_NAME] if path.is_dir() else []
        if content:
            if not overwrite:
                raise RunDirError(
                    f"run directory {path} already exists; pass --overwrite to replace it, "
                    f"`autoloss resume {path}` to continue it, or choose another --out"
                )
            for p in content:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _write_failed("create", path, exc) from None
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
        path = self.path / name
        text = "".join(json.dumps(clean(r), allow_nan=False, default=_jsonable) + "\n" for r in records)
        try:
            with open(path, "a+b") as fh:  # writes go to the end whatever the position; reads do not
                self._repair_tail(fh, path, name)
                fh.write(text.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            # What was written in part is a torn last line, cut off by the next append.
            raise _write_failed("append to", path, exc) from None

    def _repair_tail(self, fh: Any, path: Path, name: str) -> None:
        """Make the journal end with a newline before appending: a last line that a kill cut short is cut
        off (its record is recomputed); one that is whole but lost its newline gets it."""
        end = fh.seek(0, os.SEEK_END)
        if end == 0:
            return
        fh.seek(end - 1)
        if fh.read(1) == b"\n":
            return
        start = end
        while start > 0:  # back to the start of the last line
            step = min(start, 1 << 16)
            fh.seek(start - step)
            nl = fh.read(step).rfind(b"\n")
            if nl >= 0:
                start = start - step + nl + 1
                break
            start -= step
        fh.seek(start)
        tail = fh.read(end - start)
        if _parse(tail) is not None:
            fh.write(b"\n")
            return
        fh.truncate(start)
        self.torn.pop(name, None)
        warnings.warn(
            f"{path}: cut off a torn last line ({end - start} bytes, from a write a kill interrupted); "
            "its record is recomputed",
            RunDirWarning,
            stacklevel=3,
        )

    def read(self, name: str) -> list[dict[str, Any]]:
        """Every record of a journal. A torn last line (no newline, not parseable: a kill mid-write) is
        dropped and its size kept in `self.torn[name]`; a corrupt complete line is a `RunDirError`."""
        path = self.path / name
        self.torn.pop(name, None)
        if not path.is_file():
            return []
        lines = path.read_bytes().split(b"\n")
        last = lines.pop()  # after the final newline: b"" when the file ends with one
        out = []
        for number, line in enumerate(lines, 1):
            record = _parse(line)
            if record is None:
                raise RunDirError(
                    f"{path}, line {number}: not a JSON record "
                    f"({line[:60].decode('utf-8', 'replace')!r}); a kill can cut short only the last line, "
                    "so this one was damaged otherwise (edited, or written by two processes at once). "
                    "Repair or delete that line, then resume"
                )
            out.append(record)
        if last:
            record = _parse(last)
            if record is None:
                self.torn[name] = len(last)
            else:
                out.append(record)
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
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _write_failed("create", target.parent, exc) from None
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
