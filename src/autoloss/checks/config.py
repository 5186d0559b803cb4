"""Every threshold and size the filters use, in one typed, validated, hashable config.

The defaults are calibrated (see BENCHMARKS.md, "Screening"): every named loss passes every filter on its
branch, and the pipeline rejects over 99 % of the search's random trees. The config is frozen so that
probe batches, synthetic data sets and baseline MOS scores can be cached per config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class ProbeConfig:
    """The fixed probe batch for validity and the functional key."""

    rows: int = 48  # random, moderate rows per branch (the key is computed on these)
    extreme_logit: float = 20.0  # saturated logits the loss must survive (float32, as detectors train)
    key_digits: int = 4  # values and gradients are quantised to this many digits of their array's scale
    seed: int = 1234


@dataclass(frozen=True)
class CPVConfig:
    """Convergence property verification: probe grids and tolerances."""

    grid: int = 33  # points along each logit / box family
    logit_span: float = 16.0  # logit grids run over [-span, span]
    fade_logit: float = 20.0  # where the gradient must have faded (p -> 1 or p -> 0)
    fade_ratio: float = 0.05  # |grad| there must be <= fade_ratio * the largest |grad| on the grid
    rtol: float = 1e-4  # monotonicity slack, relative to the largest |loss| of the grid (float32 noise)
    atol: float = 1e-6
    grad_rtol: float = 1e-6  # a gradient "pushes" when beyond this share of its largest value on the grid
    strict: float = 1e-3  # "strictly falls somewhere": the total fall must exceed strict * scale
    unsaturated: tuple[float, float] = (0.05, 0.95)  # probability range where the gradient sign is checked
    fg_quality: tuple[float, ...] = (0.3, 0.6, 1.0)  # Z values tried for foreground RoIs
    soft_quality: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # Q values tried for soft positives
    scale_factor: float = 8.0  # reg: boxes are probed at 1x and at this linear scale...
    scale_ratio: float = 4.0  # ...and the loss's range may change by at most this factor (loose)


@dataclass(frozen=True)
class MOSConfig:
    """Model optimisation simulation: the toy problems and the pass thresholds."""

    seed: int = 0  # one shared seed: every candidate sees the same data and initial weights
    cls_steps: int = 100
    cls_lr: float = 0.5
    cls_momentum: float = 0.9
    cls_train: int = 512
    cls_test: int = 1024
    cls_classes: int = 4  # foreground classes (cls-softmax adds background)
    cls_features: int = 8
    cls_hidden: int = 16
    cls_background: float = 0.75  # share of background samples (detection is imbalanced)
    cls_min_ratio: float = 0.85  # pass when score >= ratio * the baseline's (ce / focal); see BENCHMARKS.md
    reg_boxes: int = 64
    reg_steps: int = 100
    reg_lr: float = 0.05
    reg_disjoint: float = 0.125  # share of starts that do not overlap their target
    reg_min_ratio: float = 0.8  # pass when score >= ratio * giou's; IoU loss must pass (disjoint starts)
    batch_size: int = 64  # candidates simulated together (the result of each is the same at any size)
    # Early stopping: at these fractions of the steps, a candidate whose running score is below the ratio x
    # the baseline's at that step is stopped and rejected; () turns it off. The ratios keep a wide margin
    # under the lowest running ratios of losses that pass (about 0.56 for cls-sigmoid, 0.66 for
    # cls-softmax, 0.85 for reg, on ~550 offspring of the named losses), so a loss that would pass the full
    # simulation is not stopped; most random survivors that fail are stopped at the first checkpoint.
    stop_checkpoints: tuple[float, ...] = (0.25, 0.5, 0.75)
    cls_stop_ratio: float = 0.4
    reg_stop_ratio: float = 0.5


@dataclass(frozen=True)
class CheckConfig:
    """All filter settings. `CheckConfig()` is the calibrated default."""

    probe: ProbeConfig = field(default_factory=ProbeConfig)
    cpv: CPVConfig = field(default_factory=CPVConfig)
    mos: MOSConfig = field(default_factory=MOSConfig)

    def validate(self) -> CheckConfig:
        """Raise `ValueError` naming the first bad setting and what it must be; returns self."""
        p, c, m = self.probe, self.cpv, self.mos
        _positive_int("probe.rows", p.rows, minimum=8)
        _positive_int("probe.key_digits", p.key_digits, minimum=2, maximum=12)
        _positive("probe.extreme_logit", p.extreme_logit)
        _positive_int("cpv.grid", c.grid, minimum=5)
        _positive("cpv.logit_span", c.logit_span)
        if c.fade_logit < c.logit_span:
            raise ValueError(f"cpv.fade_logit ({c.fade_logit}) must be >= cpv.logit_span ({c.logit_span})")
        _fraction("cpv.fade_ratio", c.fade_ratio)
        for name in ("rtol", "atol", "grad_rtol", "strict"):
            if not 0.0 <= getattr(c, name) < 1.0:
                raise ValueError(f"cpv.{name} must be in [0, 1), got {getattr(c, name)}")
        lo, hi = c.unsaturated
        if not 0.0 < lo < hi < 1.0:
            raise ValueError(f"cpv.unsaturated must be (lo, hi) with 0 < lo < hi < 1, got {c.unsaturated}")
        for name in ("fg_quality", "soft_quality"):
            values = getattr(c, name)
            if not values or any(not 0.0 < q <= 1.0 for q in values) or list(values) != sorted(values):
                raise ValueError(f"cpv.{name} must be increasing values in (0, 1], got {values}")
        if c.scale_factor <= 1.0 or c.scale_ratio <= 1.0:
            raise ValueError(
                f"cpv.scale_factor and cpv.scale_ratio must be > 1, got {c.scale_factor}, {c.scale_ratio}"
            )
        for name in ("cls_steps", "cls_train", "cls_test", "cls_features", "cls_hidden", "reg_steps"):
            _positive_int(f"mos.{name}", getattr(m, name))
        _positive_int("mos.cls_classes", m.cls_classes, minimum=2)
        _positive_int("mos.reg_boxes", m.reg_boxes, minimum=8)
        for name in ("cls_lr", "reg_lr"):
            _positive(f"mos.{name}", getattr(m, name))
        if not 0.0 <= m.cls_momentum < 1.0:
            raise ValueError(f"mos.cls_momentum must be in [0, 1), got {m.cls_momentum}")
        _fraction("mos.cls_background", m.cls_background, open_top=True)
        if not 0.0 <= m.reg_disjoint < 1.0:
            raise ValueError(f"mos.reg_disjoint must be in [0, 1), got {m.reg_disjoint}")
        _positive_int("mos.batch_size", m.batch_size)
        if any(not 0.0 < f < 1.0 for f in m.stop_checkpoints) or list(m.stop_checkpoints) != sorted(
            set(m.stop_checkpoints)
        ):
            raise ValueError(
                f"mos.stop_checkpoints must be increasing fractions in (0, 1), got {m.stop_checkpoints}"
            )
        for name in ("cls_min_ratio", "reg_min_ratio", "cls_stop_ratio", "reg_stop_ratio"):
            if not 0.0 <= getattr(m, name) <= 2.0:
                raise ValueError(
                    f"mos.{name} is a ratio to the baseline's score, in [0, 2]; got {getattr(m, name)}"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckConfig:
        """Build from nested plain data (e.g. a YAML section); unknown keys are errors, not ignored."""
        parts: dict[str, Any] = {}
        for f in fields(cls):
            section = data.get(f.name, {})
            sub = {"probe": ProbeConfig, "cpv": CPVConfig, "mos": MOSConfig}[f.name]
            known = {g.name for g in fields(sub)}
            unknown = set(section) - known
            if unknown:
                raise ValueError(
                    f"unknown setting(s) {', '.join(sorted(unknown))} in checks.{f.name}; "
                    f"known: {', '.join(sorted(known))}"
                )
            parts[f.name] = sub(**{k: tuple(v) if isinstance(v, list) else v for k, v in section.items()})
        unknown = set(data) - set(parts)
        if unknown:
            raise ValueError(f"unknown section(s) {', '.join(sorted(unknown))}; known: probe, cpv, mos")
        return cls(**parts).validate()


def resolve_config(config: CheckConfig | dict[str, Any] | None) -> CheckConfig:
    """The config to use: the default for None, parsed and validated for plain data."""
    if config is None:
        return DEFAULT_CONFIG
    if isinstance(config, dict):
        return CheckConfig.from_dict(config)
    if not isinstance(config, CheckConfig):
        raise TypeError(f"config must be a CheckConfig, a dict or None, got {type(config).__name__}")
    return _validated(config)


@lru_cache(maxsize=32)
def _validated(config: CheckConfig) -> CheckConfig:
    # Configs are frozen: validating one once per process is enough (screen resolves it per candidate).
    return config.validate()


def _positive_int(name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {value!r}")


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _fraction(name: str, value: float, open_top: bool = False) -> None:
    if not (0.0 < value < 1.0 if open_top else 0.0 < value <= 1.0):
        raise ValueError(f"{name} must be in (0, 1{')' if open_top else ']'}, got {value}")


DEFAULT_CONFIG = CheckConfig().validate()
