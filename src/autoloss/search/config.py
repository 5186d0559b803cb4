"""The search configuration: four small typed dataclasses (search / checks / proxy / backend) and named
budgets. Validation is by named functions with actionable messages; the resolved config is written once
to the run directory as YAML and is all that is needed to reproduce or resume a run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from autoloss.errors import AutolossError

CONFIG_VERSION = 2  # 2: rungs and promotion, held-out final seeds
BRANCH_CHOICES = ("cls", "reg", "both")
DETECTOR_BRANCH = {"fcos": "cls-sigmoid", "retinanet": "cls-sigmoid", "faster_rcnn": "cls-softmax"}


class ConfigError(AutolossError, ValueError):
    """A setting that cannot work; the message says which and what would."""


@dataclass(frozen=True)
class EvolutionConfig:
    branch: str = "both"  # cls | reg | both
    generations: int = 2
    offspring: int = 2000  # candidates generated per generation, before the filters
    top_k: int = 4  # best MOS scores per generation that get a proxy training
    parents: int = 4  # best proxy mAP that breed the next generation (elitism: best so far)
    max_depth: int = 6
    max_size: int = 40
    crossover_rate: float = 0.3
    combine_top: int = 1  # with branch "both": the best this many cls x reg losses are tried together
    # Multi-fidelity promotion (search/rungs.py): MULTIPLIERxSEEDS per rung, and the fraction of each
    # rung's trained candidates that moves up.
    rungs: str = "1x1,2x2"
    promote: float = 0.34
    final_seeds: int = 3  # held-out seeds (no rung uses them) the final comparison re-trains on
    max_proxy_evals: int | None = None
    time_limit_s: float | None = None
    seed: int = 0
    # "evolution" (the paper) or "random": every generation is fresh random trees — the random-search
    # baseline of the efficiency benchmark.
    strategy: str = "evolution"


@dataclass(frozen=True)
class FilterConfig:
    cpv: bool = True
    mos: bool = True


@dataclass(frozen=True)
class ProxySettings:
    detector: str = "fcos"
    backbone: str = "tiny"
    # shapes-dense ranked the fidelity panel closer to the real datasets than shapes at the same cost
    # (BENCHMARKS.md, "Proxy fidelity"); neither ranks like them well.
    data: str = "shapes-dense"
    images: str | None = None
    preset: str = "fcos-shapes"
    iterations: int | None = 300
    epochs: int | None = None
    device: str = "cpu"
    image_size: int | None = None
    train_size: int | None = None
    val_size: int | None = None
    lr: float | None = None  # None: the preset's learning rate


@dataclass(frozen=True)
class BackendConfig:
    backend: str = "process"  # serial | process | ray
    workers: int = 2
    ray_address: str | None = None
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0
    trial_timeout_s: float | None = None


@dataclass(frozen=True)
class SearchConfig:
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    backend: BackendConfig = field(default_factory=BackendConfig)
    version: int = CONFIG_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SearchConfig:
        version = raw.get("version")
        if version != CONFIG_VERSION:
            raise ConfigError(
                f"this run was written by config version {version}; this autoloss reads version "
                f"{CONFIG_VERSION} — start a new run, or use the autoloss release that wrote it"
            )
        parts = {}
        for name, kind in (
            ("evolution", EvolutionConfig),
            ("filters", FilterConfig),
            ("proxy", ProxySettings),
            ("backend", BackendConfig),
        ):
            section = raw.get(name) or {}
            known = {f.name for f in dataclasses.fields(kind)}
            unknown = set(section) - known
            if unknown:
                raise ConfigError(f"unknown {name} setting(s): {', '.join(sorted(unknown))}")
            parts[name] = kind(**section)
        return cls(**parts)

    def replace(self, **sections: dict[str, Any]) -> SearchConfig:
        """A copy with fields of the named sections replaced, e.g. replace(backend={"workers": 1})."""
        updated = {
            name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()
        }
        return dataclasses.replace(self, **updated)

    @property
    def cls_branch(self) -> str:
        return DETECTOR_BRANCH[self.proxy.detector]

    def searched_branches(self) -> list[str]:
        b = self.evolution.branch
        return {"cls": [self.cls_branch], "reg": ["reg"], "both": [self.cls_branch, "reg"]}[b]


# Named budgets: what `--budget` selects before individual flags override it.
BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    # About 13 minutes on 2 CPU cores: 2 generations per branch, 4 rung-0 trainings each (300 iterations of
    # FCOS-tiny on shapes-dense), promotion to 2x on 2 more seeds, the final at 2x on 3 held-out seeds.
    "default": {},
    # About a minute: a first try and the end-to-end tests.
    "smoke": {
        "evolution": {
            "generations": 2,
            "offspring": 300,
            "top_k": 2,
            "parents": 2,
            "final_seeds": 2,
            "combine_top": 1,
        },
        "proxy": {"preset": "tiny", "data": "shapes", "iterations": 30},
    },
}


def budget_config(name: str) -> SearchConfig:
    if name not in BUDGETS:
        raise ConfigError(f"unknown budget {name!r}; budgets: {', '.join(BUDGETS)}")
    return SearchConfig().replace(**BUDGETS[name])


def validate(cfg: SearchConfig) -> None:
    """Raise `ConfigError` naming the first setting that cannot work."""
    e, p, b = cfg.evolution, cfg.proxy, cfg.backend
    if e.branch not in BRANCH_CHOICES:
        raise ConfigError(f"--branch must be one of {', '.join(BRANCH_CHOICES)}, got {e.branch!r}")
    for name in (
        "generations",
        "offspring",
        "top_k",
        "parents",
        "max_depth",
        "max_size",
        "final_seeds",
        "combine_top",
    ):
        value = getattr(e, name)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    from autoloss.search.rungs import RungError, parse_rungs, validate_promote

    try:
        parse_rungs(e.rungs)
        validate_promote(e.promote)
    except RungError as exc:
        raise ConfigError(str(exc)) from None
    if e.strategy not in ("evolution", "random"):
        raise ConfigError(f"strategy must be 'evolution' or 'random', got {e.strategy!r}")
    if e.top_k > e.offspring:
        raise ConfigError(f"--top-k ({e.top_k}) cannot exceed --offspring ({e.offspring})")
    if e.max_depth < 2:
        raise ConfigError("max_depth must be at least 2 (a loss needs an operator over its inputs)")
    if not 0.0 <= e.crossover_rate <= 1.0:
        raise ConfigError(f"crossover_rate must be in [0, 1], got {e.crossover_rate}")
    if e.max_proxy_evals is not None and e.max_proxy_evals < 1:
        raise ConfigError(f"--max-proxy-evals must be positive, got {e.max_proxy_evals}")
    if e.time_limit_s is not None and e.time_limit_s <= 0:
        raise ConfigError(f"--time-limit must be positive, got {e.time_limit_s}")
    if p.detector not in DETECTOR_BRANCH:
        raise ConfigError(f"--detector must be one of {', '.join(DETECTOR_BRANCH)}, got {p.detector!r}")
    if p.iterations is not None and p.epochs is not None:
        raise ConfigError("give the proxy length as iterations or as epochs, not both")
    if p.lr is not None and not p.lr > 0:
        raise ConfigError(f"proxy lr must be positive, got {p.lr}")
    for name in ("iterations", "epochs", "image_size", "train_size", "val_size"):
        value = getattr(p, name)
        if value is not None and value < 1:
            raise ConfigError(f"proxy {name} must be positive, got {value}")
    if p.device not in ("cpu", "cuda") and not p.device.startswith("cuda:"):
        raise ConfigError(f"--device must be cpu or cuda, got {p.device!r}")
    if b.backend not in ("serial", "process", "ray"):
        raise ConfigError(f"--backend must be serial, process or ray, got {b.backend!r}")
    if b.workers < 1:
        raise ConfigError(f"--workers must be positive, got {b.workers}")
    if b.gpus_per_trial < 0 or b.cpus_per_trial <= 0:
        raise ConfigError("--gpus-per-trial must be >= 0 and --cpus-per-trial > 0")
