"""What the results were computed from: hashes of a run's input files, checked when it is resumed.

A search's journal caches every finished training by its losses, seed and length, not by its data. If the
dataset file changes between a run and its resume, the resumed search would rank new trainings against
cached ones from other data, silently. So the run directory records a SHA-256 of each file the task names
(`ProxyTask.input_files`: annotation files, weights) in `inputs.json`, and a resume compares. Image
folders are not hashed: at COCO scale that is minutes of reading per resume; the annotation file, which
lists every image, is.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

INPUTS = "inputs.json"


def fingerprint(paths: list[str]) -> dict[str, dict[str, Any]]:
    """{path as given: {"sha256", "bytes"}}; a path that does not exist is recorded as missing."""
    out: dict[str, dict[str, Any]] = {}
    for name in paths:
        path = Path(name)
        if not path.is_file():
            out[name] = {"missing": True}
            continue
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        out[name] = {"sha256": digest, "bytes": path.stat().st_size}
    return out


def changes(recorded: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]]) -> list[str]:
    """One line per input that differs between the two fingerprints, empty when they agree."""
    lines = []
    for name in sorted(set(recorded) | set(now)):
        before, after = recorded.get(name), now.get(name)
        if before == after:
            continue
        if before is None:
            lines.append(f"{name}: not an input when the run started")
        elif after is None:
            lines.append(f"{name}: no longer an input")
        elif after.get("missing"):
            lines.append(f"{name}: missing now")
        elif before.get("missing"):
            lines.append(f"{name}: missing when the run started, present now")
        else:
            lines.append(
                f"{name}: changed (sha256 {before['sha256'][:12]}…, {before['bytes']:,} bytes when the run "
                f"started; {after['sha256'][:12]}…, {after['bytes']:,} bytes now)"
            )
    return lines


def record(files: dict[str, dict[str, Any]], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The `inputs.json` document: the fingerprint resumes compare against, and accepted changes."""
    return {"files": files, "accepted_changes": list(history or [])}


def accepted(previous: dict[str, Any], now: dict[str, dict[str, Any]], lines: list[str]) -> dict[str, Any]:
    """`previous` moved on to `now`, with the change and its time recorded (`--allow-changed-data`)."""
    entry = {"at": time.strftime("%Y-%m-%d %H:%M:%S"), "changes": lines, "files_before": previous["files"]}
    return record(now, [*previous.get("accepted_changes", []), entry])
