"""`autoloss.search(...)`: the programmatic form of `autoloss search` and `autoloss resume`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoloss.evolution.config import ConfigError, SearchConfig, budget_config, resolve_task, validate
from autoloss.evolution.driver import FINAL_PAIRS, Progress, Search, reserved_costs
from autoloss.runs import fingerprint
from autoloss.runs.lock import RunLock
from autoloss.runs.rundir import RunDir, RunDirError
from autoloss.tasks import name_of

# What `resume` may change: how and where the work runs, never what is searched.
RUNTIME_OVERRIDES = {
    "backend": {
        "backend",
        "workers",
        "workers_per_gpu",
        "ray_address",
        "gpus_per_trial",
        "cpus_per_trial",
        "trial_timeout_s",
        "max_same_failures",
    },
    # Another GPU of the same kind, yes; another kind of device, no (`_check_same_device`).
    "task": {"device"},
}


SPLITS = "splits.json"


def default_run_dir() -> Path:
    return Path("runs") / time.strftime("search-%Y%m%d-%H%M%S")


def check_device(cfg: SearchConfig) -> None:
    """`--device cuda` where this machine has no CUDA: one line now, not a failed training per candidate.
    (With Ray the GPUs may be on other nodes; the executor checks the cluster's resources.)"""
    device = cfg.task.device
    if not device.startswith("cuda") or cfg.backend.backend == "ray":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
            f"{'built without CUDA' if torch.version.cuda is None else 'no GPU visible'}); use --device cpu"
        )


def preflight(cfg: SearchConfig) -> None:
    """Every check that can fail before a run directory or a display exists (ConfigError, one line)."""
    validate(cfg)
    check_device(cfg)
    check_budget(cfg)


def check_budget(cfg: SearchConfig) -> None:
    """`--max-proxy-evals` caps the whole search, final included: one that cannot pay for the baseline
    (the default and the named losses at rung 0) and the final is refused, with the least that would do."""
    budget = cfg.evolution.max_proxy_evals
    if budget is None:
        return
    baseline, final = reserved_costs(cfg)
    if budget < baseline + final:
        raise ConfigError(
            f"--max-proxy-evals {budget} cannot pay for what every search trains: the baseline ({baseline}: "
            f"the default and the named losses at rung 0) and the final ({final}: up to {FINAL_PAIRS} pairs "
            f"on {cfg.evolution.final_seeds} held-out seeds at the top rung's length); give at least "
            f"{baseline + final}, or fewer --final-seeds"
        )


def run_search(
    cfg: SearchConfig | None = None,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], RunDir]:
    cfg = cfg or budget_config("default")
    preflight(cfg)
    cfg = resolve_task(cfg)
    path = Path(out or default_run_dir())
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create run directory {path}: {exc.strerror or exc}") from None
    # Locked before `create` looks at it: an --overwrite must not delete a directory a search is writing.
    with RunLock(path):
        run = RunDir.create(path, cfg.to_dict(), overwrite=overwrite)
        run.write_text(fingerprint.INPUTS, _json(fingerprint.record(_inputs(cfg))))
        run.write_text(SPLITS, _json(describe_splits(cfg)))
        summary = Search(cfg, run, progress).run_all()
    return summary, run


def _check_same_device(trained_on: str, resume_on: str | None) -> None:
    """A resume keeps the kind of device the run trained on. Promotion and the final compare candidates
    trained before and after the resume; CPU and CUDA kernels give different APs for the same loss and
    seed, so results from both in one ranking would compare devices as much as losses."""
    if resume_on is None or resume_on.split(":")[0] == trained_on.split(":")[0]:
        return
    raise ConfigError(
        f"this run trained on {trained_on}; resuming it on {resume_on} would rank results from two kinds of "
        f"device against each other. Resume with --device {trained_on}, or start a new search with "
        f"--device {resume_on}."
    )


def resume_search(
    path: str | Path,
    overrides: dict[str, dict[str, Any]] | None = None,
    progress: Progress | None = None,
    *,
    allow_changed_data: bool = False,
) -> tuple[dict[str, Any], RunDir]:
    """Continue the run at `path`. Its input files must be as they were (`inputs.json`), unless
    `allow_changed_data`, which records the change in the run directory."""
    run = RunDir.open(path)
    cfg = SearchConfig.from_dict(run.config())
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    for section, values in overrides.items():
        bad = set(values) - RUNTIME_OVERRIDES.get(section, set())
        if bad:
            raise ConfigError(
                f"resume can only change how the work runs ({', '.join(sorted(RUNTIME_OVERRIDES))}); "
                f"not {', '.join(sorted(bad))}"
            )
    _check_same_device(cfg.task.device, overrides.get("task", {}).get("device"))
    cfg = cfg.replace(**overrides)
    validate(cfg)
    check_device(cfg)
    with RunLock(run.path):  # a second resume, or the search itself still running, is refused at once
        _check_inputs(run, cfg, allow_changed_data)
        summary = Search(cfg, run, progress).run_all()
    return summary, run


def _tasks(cfg: SearchConfig) -> list[tuple[str, Any]]:
    """(label, task) of every proxy task the search trains ("" labels a single task)."""
    from autoloss.evolution.config import cached_task
    from autoloss.evolution.proxy import sub_tasks

    return [(t.label, cached_task(cfg.task.name, t.settings)) for t in sub_tasks(cfg)]


def _inputs(cfg: SearchConfig) -> dict[str, dict[str, Any]]:
    files = [f for _, task in _tasks(cfg) for f in task.input_files()]
    return fingerprint.fingerprint(list(dict.fromkeys(files)))


def describe_splits(cfg: SearchConfig) -> dict[str, Any]:
    """How each proxy task's data is split into train / search-val / test (`splits.json` of a run)."""
    return {label or "task": task.describe_data() for label, task in _tasks(cfg)}


def _json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1) + "\n"


def _check_inputs(run: RunDir, cfg: SearchConfig, allow_changed: bool) -> None:
    """Refuse to resume against input files that changed since the run started (see runs/fingerprint)."""
    now = _inputs(cfg)
    path = run.path / fingerprint.INPUTS
    if not path.is_file():  # a run from before fingerprints: record what it resumes with from now on
        run.write_text(fingerprint.INPUTS, _json(fingerprint.record(now)))
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
        recorded = previous["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RunDirError(f"{path} is not a valid inputs record ({exc})") from None
    lines = fingerprint.changes(recorded, now)
    if not lines:
        return
    if not allow_changed:
        raise RunDirError(
            f"the input files of {run.path} changed since the run started: {'; '.join(lines)}. Its cached "
            "trainings were computed on the old data, so a resume would rank results from two datasets "
            "against each other. Restore the files, start a new run, or pass --allow-changed-data to "
            "resume anyway (the change is recorded in inputs.json)."
        )
    run.write_text(fingerprint.INPUTS, _json(fingerprint.accepted(previous, now, lines)))


def search(
    out: str | Path | None = None,
    *,
    budget: str = "default",
    task: str | Callable[..., Any] | dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """Run a search and return its summary. `sections` override the budget's config, e.g.
    `search("runs/x", budget="smoke", evolution={"seed": 1}, backend={"backend": "serial"})`.

    `task` is the proxy task: a name ("detection", "module:function", "path/to/file.py:function"), the
    factory function itself (module-level, so workers can import it), or a `task` section
    (`{"name": ..., "settings": {...}, "iterations": ...}`)."""
    if task is not None:
        section = dict(sections.get("task") or {})
        if isinstance(task, dict):
            section.update(task)
        else:
            section["name"] = task if isinstance(task, str) else name_of(task)
        sections["task"] = section
    cfg = budget_config(budget).replace(**sections)
    summary, _ = run_search(cfg, out, overwrite=overwrite, progress=progress)
    return summary
