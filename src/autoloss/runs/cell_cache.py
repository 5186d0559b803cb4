"""Training caches that cannot collide: a folder per training protocol, named by a hash of what decides its
results.

`autoloss transfer` and `autoloss fidelity` keep every finished training in a folder per (task, settings,
length, device), so a re-run trains only what is missing. Naming that folder after the dataset's parent
folder let two datasets in folders of the same name share one cache; naming it after the data's *content*
cannot: the identity holds the SHA-256 of every input file the task reads (annotations, weights) in place
of its path, so the same data under another folder name hits, and other data, another split seed or another
setting misses. The identity is stored beside the results (`settings.json`) and a folder whose stored
identity differs from the one asked for is refused rather than read. The split a result was scored on is
part of each result's id (`evolution.proxy.eval_id`): a search-val AP never answers for test.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from autoloss.errors import AutolossError
from autoloss.runs.fingerprint import fingerprint

SETTINGS = "settings.json"
# Settings that locate files rather than decide results: replaced by the files' hashes, or dropped (an image
# folder's content is listed by its annotation file, which is hashed).
_FILE_SETTINGS = ("data", "val_data", "backbone_weights")
_LOCATION_SETTINGS = ("images", "val_images")


class CacheMismatch(AutolossError):
    """A cache folder whose stored settings are not the ones asked for; the message names the difference."""


def identity(cfg: Any) -> dict[str, Any]:
    """What decides a training protocol's results, with file paths replaced by content hashes: the task,
    its resolved settings, its length and device (`cfg` is a `SearchConfig`)."""
    task = cfg.load_task()
    settings = dict(task.config())
    files = task.input_files()
    digests = {name: info.get("sha256", "missing") for name, info in fingerprint(files).items()}
    from autoloss.data_specs import annotation_file, is_generated

    for key in _FILE_SETTINGS:
        value = settings.get(key)
        if isinstance(value, str) and value and not is_generated(value):
            path = annotation_file(value) if key == "data" else value
            settings[key] = {
                "sha256": digests.get(path) or fingerprint([path])[path].get("sha256", "missing")
            }
    for key in _LOCATION_SETTINGS:
        settings.pop(key, None)
    t = cfg.task
    return {
        "task": t.name,
        "settings": settings,
        "iterations": t.iterations,
        "epochs": t.epochs,
        "device": t.device,
    }


def key_of(ident: dict[str, Any]) -> str:
    """A 12-hex-digit hash of an identity (JSON with sorted keys)."""
    text = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cell_folder(root: Path, readable: str, ident: dict[str, Any]) -> Path:
    """`root/<readable>-<hash>`, created with its `settings.json`, or checked against it when it exists."""
    folder = Path(root) / f"{readable}-{key_of(ident)}"
    stored = folder / SETTINGS
    canonical = json.loads(json.dumps(ident, sort_keys=True, default=str))
    if stored.is_file():
        try:
            before = json.loads(stored.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CacheMismatch(f"{stored}: unreadable cache settings ({exc}); delete the folder") from None
        if before != canonical:
            diff = sorted(k for k in set(before) | set(canonical) if before.get(k) != canonical.get(k))
            raise CacheMismatch(
                f"{folder}: cached trainings were made with other settings ({', '.join(diff)} differ); "
                "delete the folder or use another --out"
            )
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tmp = stored.with_suffix(".tmp")
    tmp.write_text(json.dumps(canonical, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(stored)
    return folder
