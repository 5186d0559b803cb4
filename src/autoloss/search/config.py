"""The search configuration: four small typed dataclasses (search / checks / proxy / backend) and named
budgets. Validation is by named functions with actionable messages; the resolved config is written once
to the run directory as YAML and is all that is needed to reproduce or resume a run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from autoloss.errors import AutolossError
from autoloss.spaces.branches import DETECTOR_CLS_BRANCH

CONFIG_VERSION = 3  # 2: rungs and promotion, held-out final seeds; 3: COCO-scale data, GPUs
# Versions this one reads: a version-2 run directory is version 3 with every new setting at its default
# (the defaults reproduce what version 2 did on CPU).
READS_VERSIONS = (2, 3)
BRANCH_CHOICES = ("cls", "reg", "both")
DETECTOR_BRANCH = DETECTOR_CLS_BRANCH  # detector -> the classification branch it searches


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
    """The proxy training. Settings left at None take the preset's value (`autoloss presets` lists them)."""

    detector: str | None = None
    backbone: str | None = None
    # shapes-dense ranked the fidelity panel closer to the real datasets than shapes at the same cost
    # (BENCHMARKS.md, "Proxy fidelity"); neither ranks like them well.
    data: str = "shapes-dense"
    images: str | None = None
    val_data: str | None = None
    val_images: str | None = None
    train_subset: int | None = None
    preset: str = "fcos-shapes"
    iterations: int | None = 300
    epochs: int | None = None
    device: str = "cpu"
    resize: str | None = None
    image_size: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    train_size: int | None = None
    val_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    amp: str | None = None  # off | bf16 | fp16 (CUDA only)
    deterministic: bool | None = None
    loader_workers: int | None = None
    pretrained: str | None = None
    backbone_weights: str | None = None
    trainable_layers: int | None = None


@dataclass(frozen=True)
class BackendConfig:
    backend: str = "process"  # serial | process | ray
    workers: int = 2
    ray_address: str | None = None
    gpus_per_trial: float | None = None  # Ray: None = 1 per trial on cuda, 0 on cpu
    cpus_per_trial: float = 1.0  # also the torch threads of each training
    workers_per_gpu: int | None = None  # process backend on cuda: None = one worker per visible GPU
    trial_timeout_s: float | None = None
    # The circuit breaker: this many trainings in a row that fail for the same reason stop the search
    # (a broken dataset, device or install fails every training alike; a bad loss diverges or fails alone).
    max_same_failures: int = 4


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
        if version not in READS_VERSIONS:
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
        return cls(**parts)  # the current version: an older one is migrated by its defaults

    def replace(self, **sections: dict[str, Any]) -> SearchConfig:
        """A copy with fields of the named sections replaced, e.g. replace(backend={"workers": 1})."""
        updated = {
            name: dataclasses.replace(getattr(self, name), **values) for name, values in sections.items()
        }
        return dataclasses.replace(self, **updated)

    @property
    def detector(self) -> str:
        """The proxy's detector: set in the proxy section, or the preset's."""
        if self.proxy.detector is not None:
            return self.proxy.detector
        from autoloss.search.presets import preset_detector

        return preset_detector(self.proxy.preset)

    @property
    def cls_branch(self) -> str:
        return DETECTOR_BRANCH[self.detector]

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
    if p.detector is not None and p.detector not in DETECTOR_BRANCH:
        raise ConfigError(f"--detector must be one of {', '.join(DETECTOR_BRANCH)}, got {p.detector!r}")
    if p.iterations is not None and p.epochs is not None:
        raise ConfigError("give the proxy length as iterations or as epochs, not both")
    if p.lr is not None and not p.lr > 0:
        raise ConfigError(f"proxy lr must be positive, got {p.lr}")
    for name in (
        "iterations",
        "epochs",
        "image_size",
        "min_size",
        "max_size",
        "train_size",
        "val_size",
        "train_subset",
        "batch_size",
    ):
        value = getattr(p, name)
        if value is not None and value < 1:
            raise ConfigError(f"proxy {name.replace('_', '-')} must be positive, got {value}")
    if p.amp is not None and p.amp not in ("off", "bf16", "fp16"):
        raise ConfigError(f"--amp must be off, bf16 or fp16, got {p.amp!r}")
    if p.resize is not None and p.resize not in ("letterbox", "keep-aspect"):
        raise ConfigError(f"--resize must be letterbox or keep-aspect, got {p.resize!r}")
    if p.optimizer is not None and p.optimizer not in ("sgd", "adamw"):
        raise ConfigError(f"--optimizer must be sgd or adamw, got {p.optimizer!r}")
    if p.loader_workers is not None and p.loader_workers < 0:
        raise ConfigError(f"--loader-workers must be >= 0, got {p.loader_workers}")
    if p.pretrained is not None and p.backbone_weights is not None:
        raise ConfigError("give --pretrained or --backbone-weights, not both")
    from autoloss.search.presets import PresetError, check_preset

    try:
        check_preset(cfg)
    except PresetError as exc:
        raise ConfigError(str(exc)) from None
    if p.device not in ("cpu", "cuda") and not p.device.startswith("cuda:"):
        raise ConfigError(f"--device must be cpu or cuda, got {p.device!r}")
    if b.backend not in ("serial", "process", "ray"):
        raise ConfigError(f"--backend must be serial, process or ray, got {b.backend!r}")
    if b.workers < 1:
        raise ConfigError(f"--workers must be positive, got {b.workers}")
    if (b.gpus_per_trial is not None and b.gpus_per_trial < 0) or b.cpus_per_trial <= 0:
        raise ConfigError("--gpus-per-trial must be >= 0 and --cpus-per-trial > 0")
    if b.gpus_per_trial == 0 and b.backend == "ray" and p.device.startswith("cuda"):
        raise ConfigError(
            "--gpus-per-trial 0 with --device cuda: Ray would hide every GPU from the trials; "
            "leave it out (1 GPU per trial) or give a fraction such as 0.5 to share a GPU"
        )
    if b.workers_per_gpu is not None and b.workers_per_gpu < 1:
        raise ConfigError(f"--workers-per-gpu must be positive, got {b.workers_per_gpu}")
    if b.max_same_failures < 1:
        raise ConfigError(f"max_same_failures must be positive, got {b.max_same_failures}")


def load_config_file(path: str, base: SearchConfig) -> SearchConfig:
    """`base` with the settings of a YAML file in the run directory's config.yaml schema (sections
    evolution / filters / proxy / backend; any subset of them and of their settings)."""
    import yaml

    try:
        raw = yaml.safe_load(open(path, encoding="utf-8").read())
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: malformed YAML: {str(exc).splitlines()[0]}") from None
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected sections evolution/filters/proxy/backend")
    raw = dict(raw)
    version = raw.pop("version", CONFIG_VERSION)
    if version not in READS_VERSIONS:
        raise ConfigError(f"--config {path}: config version {version} is not one this autoloss reads")
    sections = {f.name for f in dataclasses.fields(SearchConfig)} - {"version"}
    unknown = set(raw) - sections
    if unknown:
        raise ConfigError(
            f"--config {path}: unknown section(s) {', '.join(sorted(unknown))}; "
            f"expected {', '.join(sorted(sections))}"
        )
    updates = {}
    for name, values in raw.items():
        if not isinstance(values, dict):
            raise ConfigError(f"--config {path}: section {name!r} must be a mapping of settings")
        known = {f.name for f in dataclasses.fields(getattr(base, name))}
        bad = set(values) - known
        if bad:
            raise ConfigError(
                f"--config {path}: unknown {name} setting(s): {', '.join(sorted(bad))}; "
                f"known: {', '.join(sorted(known))}"
            )
        updates[name] = values
    return base.replace(**updates)
