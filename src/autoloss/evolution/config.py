"""The search configuration: four small typed dataclasses (evolution / filters / task / backend) and named
budgets. Validation is by named functions with actionable messages; the resolved config is written once
to the run directory as YAML and is all that is needed to reproduce or resume a run.

The search knows its proxy task only through the task protocol (`autoloss.tasks`): the `task` section
names the task and carries its settings as an opaque mapping, which the task's factory interprets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from autoloss.errors import AutolossError
from autoloss.tasks import DEFAULT_TASK, ProxyTask, TaskError, canonical_name, load_task, task_key

# 2: rungs and promotion, held-out final seeds; 3: COCO-scale data, GPUs; 4: the proxy-task protocol (the
# `proxy` section became `task`: a task name, the task's own settings, and the schedule).
CONFIG_VERSION = 4
# Versions this one reads: 2 and 3 are migrated (`_migrate_proxy`), their proxy settings becoming the
# detection task's; every newer setting takes the default that reproduces what they did.
READS_VERSIONS = (2, 3, 4)
BRANCH_CHOICES = ("cls", "reg", "both")
SECTION_NAMES = ("evolution", "filters", "task", "backend")


class ConfigError(AutolossError, ValueError):
    """A setting that cannot work; the message says which and what would."""


@dataclass(frozen=True)
class EvolutionConfig:
    branch: str = "both"  # cls | reg | both
    generations: int = 2
    offspring: int = 10_000  # candidates generated per generation, before the filters (screening is cheap)
    top_k: int = 4  # best MOS scores per generation that get a proxy training
    # Survivors not picked wait for later generations in a pool of this many per branch (evolution/pool.py);
    # 0: none, as the paper (left over survivors are lost).
    survivor_pool: int = 0
    parents: int = 4  # best proxy mAP that breed the next generation (elitism: best so far)
    max_depth: int = 6
    max_size: int = 40
    crossover_rate: float = 0.3
    combine_top: int = 1  # with branch "both": the best this many cls x reg losses are tried together
    # Multi-fidelity promotion (search/rungs.py): MULTIPLIERxSEEDS per rung, and the fraction of each
    # rung's trained candidates that moves up.
    rungs: str = "1x1,2x2"
    promote: float = 0.34
    final_seeds: int = 5  # held-out seeds (no rung uses them) the final re-trains on; < 5 is "too few"
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


# The search's default proxy: the built-in detection task's fcos-shapes preset on shapes-dense, which ranked
# the fidelity panel closer to the real datasets than shapes at the same cost (BENCHMARKS.md, "Proxy
# fidelity"); neither ranks like them well.
DEFAULT_TASK_SETTINGS: dict[str, Any] = {"preset": "fcos-shapes", "data": "shapes-dense"}


@dataclass(frozen=True)
class TaskConfig:
    """The proxy task and the schedule the search trains it for (rung 0; higher rungs multiply it).

    `name` is a built-in task ("detection") or a user's factory (`module:function`, `file.py:function`);
    `settings` go to its factory as they are, and the run directory records them resolved
    (`ProxyTask.config()`). With neither `iterations` nor `epochs` the task's own length is used."""

    name: str = DEFAULT_TASK
    settings: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TASK_SETTINGS))
    iterations: int | None = 300
    epochs: int | None = None
    device: str = "cpu"
    # Several proxy tasks at once (DETECTOR:DATA:SIZE:ITERATIONS each, the form fidelity takes): each is
    # the task above with that detector, data, image size and length; fitness is the mean over them of
    # AP relative to the default's (evolution/fitness.py). Empty: the task above alone, fitness its AP.
    proxy_tasks: list[str] = field(default_factory=list)


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
    task: TaskConfig = field(default_factory=TaskConfig)
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
        if version < 4:
            raw = _migrate_proxy(raw)
        parts = {}
        for name, kind in (
            ("evolution", EvolutionConfig),
            ("filters", FilterConfig),
            ("task", TaskConfig),
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
        """A copy with fields of the named sections replaced, e.g. replace(backend={"workers": 1}). The
        task's `settings` are merged into the current ones (nested mappings too), not replaced."""
        updated = {}
        for name, values in sections.items():
            current = getattr(self, name)
            if name == "task" and "proxy_tasks" not in values and _names_own_task(values):
                # Your own data, preset, detector or task replaces the built-in proxy tasks (each of them
                # names its data and detector), rather than being silently overridden by them.
                values = {**values, "proxy_tasks": []}
            if name == "task" and _names_preset_without_length(values):
                # A preset brings its own schedule (fcos-r50-coco: 2,000 iterations); the length set
                # before was the budget's, for the default preset. One rule for the CLI, --config files
                # and Python, since all three build their config through here.
                values = {**values, "iterations": None, "epochs": None}
            if name == "task" and "settings" in values:
                values = {**values, "settings": merged(current.settings, values["settings"] or {})}
            updated[name] = dataclasses.replace(current, **values)
        return dataclasses.replace(self, **updated)

    def load_task(self) -> ProxyTask:
        """The proxy task this config trains (built once per distinct task and settings); with several
        (`proxy_tasks`), the first."""
        return cached_task(self.task.name, task_settings(self))

    @property
    def cls_branch(self) -> str:
        """The classification search space of the proxy task's head."""
        return self.load_task().cls_branch

    def searched_branches(self) -> list[str]:
        b = self.evolution.branch
        return {"cls": [self.cls_branch], "reg": ["reg"], "both": [self.cls_branch, "reg"]}[b]


# The default search's proxy tasks: FCOS-tiny on two built-in real photo sets at 128 px, 300 iterations each
# (fitness: mean AP relative to the default's on each; README "What it finds"). Real photos because every
# synthetic proxy ranked the fidelity panel against real data at τ ≈ 0 while two real sets agreed at
# +0.54 (BENCHMARKS.md, "Proxy fidelity"); 128 px because it costs a third of 256 px per training, which
# is what fits two tasks, two rungs and a 5-seed final into 30 minutes on 2 cores.
DEFAULT_PROXY_TASKS = ["fcos:bccd:128:300", "fcos:thermal:128:300"]

# Named budgets: what `--budget` selects before individual flags override it.
BUDGETS: dict[str, dict[str, dict[str, Any]]] = {
    # About 30 minutes on 2 CPU cores: 2 generations per branch, 2 rung-0 trainings each on both real
    # proxy tasks, promotion to 2x on 2 more seeds, the final at 2x on 5 held-out seeds, AP on test.
    "default": {
        "evolution": {"top_k": 2},
        "task": {"proxy_tasks": list(DEFAULT_PROXY_TASKS)},
    },
    # About 4x the default's work (616 proxy-length trainings planned against its 150): about 2 hours on
    # 2 CPU cores where the default takes 30 minutes. Six generations per branch, 4 rung-0 picks each,
    # every rung on 2 seeds (bench/pick.py: one seed resolves only about ±0.1 of relative fitness, the
    # size of the margins that pick a winner), promotion to 3x, the best 2 x 2 combinations, the final at
    # 3x on 5 held-out seeds. `autoloss resume` continues it if it is stopped.
    "long": {
        "evolution": {"generations": 6, "top_k": 4, "combine_top": 2, "rungs": "1x2,3x2"},
        "task": {"proxy_tasks": list(DEFAULT_PROXY_TASKS)},
    },
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
        "task": {"settings": {"preset": "tiny", "data": "shapes"}, "iterations": 30, "proxy_tasks": []},
    },
}


def _names_preset_without_length(values: dict[str, Any]) -> bool:
    settings = values.get("settings") or {}
    return settings.get("preset") is not None and "iterations" not in values and "epochs" not in values


def _names_own_task(values: dict[str, Any]) -> bool:
    settings = values.get("settings") or {}
    return "name" in values or any(settings.get(k) is not None for k in ("data", "preset", "detector"))


def budget_config(name: str) -> SearchConfig:
    if name not in BUDGETS:
        raise ConfigError(f"unknown budget {name!r}; budgets: {', '.join(BUDGETS)}")
    return SearchConfig().replace(**BUDGETS[name])


def validate(cfg: SearchConfig) -> None:
    """Raise `ConfigError` naming the first setting that cannot work."""
    e, p, b = cfg.evolution, cfg.task, cfg.backend
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
    from autoloss.evolution.rungs import RungError, parse_rungs, validate_promote

    try:
        parse_rungs(e.rungs)
        validate_promote(e.promote)
    except RungError as exc:
        raise ConfigError(str(exc)) from None
    if e.strategy not in ("evolution", "random"):
        raise ConfigError(f"strategy must be 'evolution' or 'random', got {e.strategy!r}")
    if isinstance(e.survivor_pool, bool) or not isinstance(e.survivor_pool, int) or e.survivor_pool < 0:
        raise ConfigError(f"--survivor-pool must be an integer >= 0, got {e.survivor_pool!r}")
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
    if p.iterations is not None and p.epochs is not None:
        raise ConfigError("give the proxy length as iterations or as epochs, not both")
    for name in ("iterations", "epochs"):
        value = getattr(p, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"proxy {name} must be a positive integer, got {value!r}")
    if not isinstance(p.settings, dict):
        raise ConfigError(f"task settings must be a mapping, got {type(p.settings).__name__}")
    check_proxy_tasks(cfg)
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
    check_task(cfg)


def check_proxy_tasks(cfg: SearchConfig) -> None:
    """Each `--proxy-task` parses, names data that exists, and shares one classification branch with the
    others (one search space for all of them)."""
    from autoloss.spaces.branches import DETECTOR_CLS_BRANCH
    from autoloss.tasks.spec import parse_task_text

    texts = cfg.task.proxy_tasks
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ConfigError("--proxy-task values must be DETECTOR:DATA:SIZE:ITERATIONS strings")
    if len(set(texts)) != len(texts):
        raise ConfigError(f"--proxy-task given twice: {sorted(t for t in texts if texts.count(t) > 1)[0]}")
    try:
        parsed = [parse_task_text(t) for t in texts]
    except TaskError as exc:
        raise ConfigError(f"--proxy-task: {exc}") from None
    branches = {DETECTOR_CLS_BRANCH[t.detector] for t in parsed}
    if len(branches) > 1:
        raise ConfigError(
            "--proxy-task: every task must share one classification branch (fcos/retinanet take "
            "cls-sigmoid, faster_rcnn cls-softmax): one search cannot train on both"
        )
    if parsed and cfg.task.epochs is not None:
        raise ConfigError("--proxy-task gives each task's length in iterations; drop --proxy-epochs")


def proxy_task_settings(cfg: SearchConfig) -> list[tuple[str, dict[str, Any], int | None]]:
    """(label, settings, iterations) of each proxy task the search trains: the task section alone (label
    "", its own length), or one per `--proxy-task` text — the section's settings with the text's detector,
    data and image size, and the text's length. The one place that turns the texts into tasks."""
    if not cfg.task.proxy_tasks:
        return [("", cfg.task.settings, cfg.task.iterations)]
    from autoloss.tasks.spec import parse_task_text

    out = []
    for text in cfg.task.proxy_tasks:
        t = parse_task_text(text)
        out.append((text, merged(cfg.task.settings, t.settings()), t.iterations))
    return out


def task_settings(cfg: SearchConfig) -> dict[str, Any]:
    """The settings of the search's (first) proxy task: what decides its classification branch."""
    return proxy_task_settings(cfg)[0][1]


def check_task(cfg: SearchConfig) -> ProxyTask:
    """The proxy task, loaded and checked (`ProxyTask.check`); ConfigError with the task's message."""
    try:
        task = cfg.load_task()
        task.check()
        for _, settings, _ in proxy_task_settings(cfg)[1:]:
            cached_task(cfg.task.name, settings).check()
        given = (cfg.task.iterations, cfg.task.epochs) != (None, None)
        if not given and task.default_length() == (None, None):
            raise TaskError(
                f"task {cfg.task.name!r} has no length of its own: give --proxy-iterations or --proxy-epochs"
            )
    except TaskError as exc:
        raise ConfigError(str(exc)) from None
    return task


def resolve_task(cfg: SearchConfig) -> SearchConfig:
    """`cfg` with its task written out for the run directory: a file path made absolute, the settings as
    the task resolved them (`ProxyTask.config()`) and the length it trains for, so the run directory says
    what was trained and a resume trains the same."""
    task = check_task(cfg)
    t = cfg.task
    iterations, epochs = (
        (t.iterations, t.epochs) if (t.iterations, t.epochs) != (None, None) else task.default_length()
    )
    try:
        name = canonical_name(t.name)
    except TaskError as exc:
        raise ConfigError(str(exc)) from None
    resolved = dataclasses.replace(t, name=name, settings=task.config(), iterations=iterations, epochs=epochs)
    return dataclasses.replace(cfg, task=resolved)


_TASKS: dict[str, ProxyTask] = {}


def cached_task(name: str, settings: dict[str, Any]) -> ProxyTask:
    """`load_task(name, settings)`, built once per distinct (name, settings) in this process."""
    key = task_key(name, settings)
    if key not in _TASKS:
        _TASKS[key] = load_task(name, settings)
    return _TASKS[key]


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update`'s values, merging the mappings present in both."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


# Version 2-3 proxy settings that were training settings (TrainConfig fields) of the detection task.
_V3_TRAIN_SETTINGS = ("batch_size", "lr", "optimizer", "amp", "deterministic", "loader_workers")


def _migrate_proxy(raw: dict[str, Any]) -> dict[str, Any]:
    """A version 2-3 config with its `proxy` section as a version-4 `task` section that trains the same
    (None meant the preset's value there, so only the settings that were set carry over)."""
    raw = dict(raw)
    proxy = dict(raw.pop("proxy", None) or {})
    task: dict[str, Any] = {"name": DEFAULT_TASK}
    for name, default in (("iterations", 300), ("epochs", None), ("device", "cpu")):
        task[name] = proxy.pop(name, default)
    train = {k: proxy.pop(k) for k in _V3_TRAIN_SETTINGS if proxy.get(k) is not None}
    settings = {**DEFAULT_TASK_SETTINGS, **{k: v for k, v in proxy.items() if v is not None}}
    if train:
        settings["train"] = train
    task["settings"] = settings
    raw["task"] = task
    return raw


def load_config_file(path: str, base: SearchConfig) -> SearchConfig:
    """`base` with the settings of a YAML file in the run directory's config.yaml schema (sections
    evolution / filters / task / backend; any subset of them and of their settings)."""
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
        raise ConfigError(f"--config {path}: expected sections evolution/filters/task/backend")
    raw = dict(raw)
    version = raw.pop("version", CONFIG_VERSION)
    if version not in READS_VERSIONS:
        raise ConfigError(f"--config {path}: config version {version} is not one this autoloss reads")
    if "proxy" in raw:
        raise ConfigError(
            f"--config {path}: the proxy section is now `task` (config version 4): put its settings "
            "under task.settings, and iterations / epochs / device under task"
        )
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
