"""A COCO JSON parsed once per machine: `load_coco` keeps each parsed file as flat arrays in the user's
cache folder and memory-maps them on every later load.

Every worker of a search loads its task's data. Parsing COCO train2017's 450 MB JSON takes tens of seconds
and, as Python objects, gigabytes; the columns it is reduced to (`coco_json.CocoSource`) are ~50 MB, and a
memory map of them is shared by every process on the machine through the page cache, so a worker's load
is a few file opens. The cache folder is `$AUTOLOSS_CACHE`, else `$XDG_CACHE_HOME/autoloss`, else
`~/.cache/autoloss` (where torch keeps its own, for the same reason: it outlives a checkout and a run).

An entry is named by the JSON's resolved path, size and modification time, which a stat reads: hashing
450 MB would cost as much as the warm load is meant to take. An edited file gets a new entry. Entries are
written to a temporary folder and renamed into place, so processes that parse the same file at once each
finish, one entry wins, and none ever reads a half-written entry. A cache that cannot be written (read-only
home, full disk) costs speed, not the run: the parse is used from memory, with one warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from autoloss.detection.coco_json import CocoSource, ParseCounts, read_coco_json
from autoloss.detection.data import DataReport, DataWarning

FORMAT = 1  # bumped whenever the columns or their meaning change, so old entries are not read
ENV = "AUTOLOSS_CACHE"
_ARRAYS = tuple(f.name for f in dataclasses.fields(CocoSource) if f.type == "np.ndarray")


def cache_root() -> Path:
    """The user cache folder autoloss keeps machine-local caches in."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "autoloss"


def load_coco(path: str | Path, report: DataReport, cache: bool = True) -> CocoSource:
    """The parsed `path` (see `coco_json.read_coco_json`), from the cache when it holds this version of the
    file, else parsed and stored there (`cache=False`: parsed, nothing stored)."""
    path = Path(path)
    if not cache:
        return read_coco_json(path, report)
    try:
        stat = path.stat()
    except OSError:
        return read_coco_json(path, report)  # names the problem (file not found, ...) as a DatasetError
    stamp = {
        "format": FORMAT,
        "path": str(path.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    key = hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:24]
    entry = cache_root() / "coco" / key
    source = _read_entry(entry, stamp, path)
    if source is not None:
        source.counts.replay(report)
        return source
    if entry.exists():
        shutil.rmtree(entry, ignore_errors=True)  # damaged (an interrupted disk, a manual edit): replaced
    source = read_coco_json(path, report)
    try:
        _write_entry(entry, stamp, source)
    except OSError as err:
        warnings.warn(
            f"{path}: could not cache the parsed annotations under {entry.parent} ({err}); every load will "
            f"parse the JSON again (set {ENV} to a writable folder)",
            DataWarning,
            stacklevel=2,
        )
    return source


def _read_entry(entry: Path, stamp: dict, path: Path) -> CocoSource | None:
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        if meta.get("stamp") != stamp:
            return None
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
    except (OSError, ValueError):
        return None  # absent, or damaged past what the atomic rename rules out: parse again
    counts = meta["counts"]
    return CocoSource(
        path=str(path),
        class_names=tuple(meta["class_names"]),
        category_ids=tuple(meta["category_ids"]),
        split_names=tuple(meta["split_names"]),
        counts=ParseCounts(counts["crowd"], counts["orphaned"], tuple(counts["examples"])),
        **arrays,
    )


def _write_entry(entry: Path, stamp: dict, source: CocoSource) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        for name in _ARRAYS:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(source, name)))
        meta = {
            "stamp": stamp,
            "class_names": list(source.class_names),
            "category_ids": list(source.category_ids),
            "split_names": list(source.split_names),
            "counts": {
                "crowd": source.counts.annotations_crowd,
                "orphaned": source.counts.annotations_orphaned,
                "examples": list(source.counts.examples),
            },
        }
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        try:
            os.rename(tmp, entry)
        except OSError:
            if not (entry / "meta.json").is_file():
                raise
            # another process stored the same file first; its entry is as good as ours
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
