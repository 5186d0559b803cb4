"""`autoloss.search(...)`: the programmatic form of `autoloss search` and `autoloss resume`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from autoloss.data_specs import is_generated
from autoloss.runs.rundir import RunDir
from autoloss.search.config import ConfigError, SearchConfig, budget_config, validate
from autoloss.search.driver import Progress, Search

# What `resume` may change: how and where the work runs, never what is searched.
RUNTIME_OVERRIDES = {
    "backend": {"backend", "workers", "ray_address", "gpus_per_trial", "cpus_per_trial", "trial_timeout_s"},
    "proxy": {"device"},
}


def default_run_dir() -> Path:
    return Path("runs") / time.strftime("search-%Y%m%d-%H%M%S")


def check_data(cfg: SearchConfig) -> None:
    data = cfg.proxy.data
    if not is_generated(data) and not Path(data).is_file():
        raise ConfigError(
            f"--data must be 'shapes', 'shapes-dense' or a COCO annotations JSON; {data!r} does not exist"
        )


def run_search(
    cfg: SearchConfig | None = None,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> tuple[dict[str, Any], RunDir]:
    cfg = cfg or budget_config("default")
    validate(cfg)
    check_data(cfg)
    run = RunDir.create(out or default_run_dir(), cfg.to_dict(), overwrite=overwrite)
    summary = Search(cfg, run, progress).run_all()
    return summary, run


def resume_search(
    path: str | Path, overrides: dict[str, dict[str, Any]] | None = None, progress: Progress | None = None
) -> tuple[dict[str, Any], RunDir]:
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
    cfg = cfg.replace(**overrides)
    validate(cfg)
    summary = Search(cfg, run, progress).run_all()
    return summary, run


def search(
    out: str | Path | None = None,
    *,
    budget: str = "default",
    overwrite: bool = False,
    progress: Progress | None = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """Run a search and return its summary. `sections` override the budget's config, e.g.
    `search("runs/x", budget="smoke", evolution={"seed": 1}, backend={"backend": "serial"})`."""
    cfg = budget_config(budget).replace(**sections)
    summary, _ = run_search(cfg, out, overwrite=overwrite, progress=progress)
    return summary
