"""`--compile-loss`: compiled losses equal eager ones, compile once for every size, and fall back to eager.

The inductor cases compile C++ (seconds each, tens of seconds in a fresh process without inductor's disk
cache): they are marked slow and skip, with the probe's reason, where no compiler is usable. The logic of
the wrapper (fallback, error propagation, recompile counting) is checked with dynamo's "eager" backend,
which traces without compiling.
"""

from __future__ import annotations

import json
import pickle
import warnings

import pytest
import torch
import yaml
from click.testing import CliRunner

from autoloss.cli import cli
from autoloss.cli.common import task_settings
from autoloss.detection import compiled_loss
from autoloss.detection.compiled_loss import CompiledLoss, CompileWarning, compile_losses, compiler_problem
from autoloss.detection.loss_inputs import reg_inputs, sigmoid_cls_inputs
from autoloss.detection.runner import ExperimentConfig
from autoloss.detection.task import DetectionTask, run_experiment
from autoloss.detection.train import TrainConfig, validate_train_config
from autoloss.loss import Loss

# Through the group, as `autoloss train`: invoking the command object alone caches a help option
# without the group's -h (click), which changes `train --help` for later tests in the process.
TINY = ["train", "--preset", "tiny", "--iterations", "3", "--json"]


def _boxes(n: int, gen: torch.Generator, scale: float = 128.0) -> torch.Tensor:
    """n xyxy pixel boxes inside a scale x scale image, each at least 2 px wide and high."""
    xy = torch.rand(n, 2, generator=gen) * scale * 0.7
    wh = 2.0 + torch.rand(n, 2, generator=gen) * scale * 0.3
    return torch.cat([xy, xy + wh], dim=1)


def _reg_case(n: int, seed: int) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """I/U/E of n predicted vs GT boxes (FCOS positives: tens to hundreds per batch); grads w.r.t. pred."""
    gen = torch.Generator().manual_seed(seed)
    pred = _boxes(n, gen).requires_grad_()
    return reg_inputs(pred, _boxes(n, gen)), [pred]


def _cls_case(n: int, seed: int, k: int = 5) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """cls-sigmoid inputs of n locations x k classes (a batch of 16 at 128 px: ~5,400 rows), ~5 % positive."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, k, generator=gen) * 3.0).requires_grad_()
    positive = torch.rand(n, generator=gen) < 0.05
    labels = torch.randint(0, k, (n,), generator=gen)
    onehot = torch.zeros(n, k)
    onehot[positive, labels[positive]] = 1.0
    iou = torch.where(positive, torch.rand(n, generator=gen), torch.zeros(n))
    return sigmoid_cls_inputs(logits, onehot, iou), [logits]


def _value_and_grads(loss, case, n, seed):
    """The loss's value and gradients on fresh inputs (a compiled backward frees its buffers: no retain)."""
    inputs, leaves = case(n, seed)
    out = loss(**inputs)
    return out.detach(), torch.autograd.grad(out.sum(), leaves, allow_unused=True)


def _needs_compiler() -> None:
    problem = compiler_problem()
    if problem is not None:
        pytest.skip(f"torch.compile (inductor) is unusable here: {problem}")


# --- inductor: the real compiler ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "case", "sizes"),
    [
        ("focal", _cls_case, (5440, 4800, 6100, 777)),
        ("giou", _reg_case, (230, 180, 410, 3)),
        ("cse-b-reg", _reg_case, (230, 57)),  # a published loss: constants, repeated subtrees
    ],
)
def test_compiled_named_loss_equals_eager_with_one_graph_for_every_size(name, case, sizes):
    _needs_compiler()
    eager = Loss.named(name)
    fast = CompiledLoss(eager)
    for step, n in enumerate(sizes):
        value, grads = _value_and_grads(fast, case, n, step)
        want_value, want_grads = _value_and_grads(eager, case, n, step)
        torch.testing.assert_close(value, want_value, rtol=1e-5, atol=1e-5)
        for got, want in zip(grads, want_grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert fast.fallback is None
    assert fast.graphs == 1, f"recompiled: {fast.graphs} graphs for sizes {sizes}"  # dynamic shapes
    assert fast.compile_seconds > 0


@pytest.mark.slow
def test_compiled_loss_gives_nan_where_eager_does():
    _needs_compiler()
    # Log(I - U) is log of a negative number: NaN everywhere, in eager and compiled alike
    eager = Loss.parse("Log(Sub(I,U))", "reg")
    value, _ = _value_and_grads(CompiledLoss(eager), _reg_case, 64, 0)
    want, _ = _value_and_grads(eager, _reg_case, 64, 0)
    assert torch.isnan(value).all() and torch.isnan(want).all()


@pytest.mark.slow
def test_a_nan_loss_diverges_the_same_compiled_or_not():
    _needs_compiler()
    runs = [
        run_experiment(
            ExperimentConfig(
                detector="fcos",
                image_size=64,
                train_size=16,
                val_size=8,
                reg_loss="Log(Sub(I,U))",
                train=TrainConfig(iterations=3, batch_size=4, warmup_iters=1, compile_loss=flag),
            )
        )
        for flag in (False, True)
    ]
    outcomes = [(result.status, result.reason, result.iterations) for result, _ in runs]
    assert outcomes == [("diverged", "iteration 1: loss is nan", 1)] * 2
    compiled_reg = runs[1][1].model.head.reg_loss
    assert (
        isinstance(compiled_reg, CompiledLoss) and compiled_reg.graphs == 1 and compiled_reg.fallback is None
    )


@pytest.mark.slow
def test_train_compile_loss_trains_and_records_the_setting(tmp_path):
    _needs_compiler()
    out = tmp_path / "run"
    args = [*TINY, "--cls-loss", "focal", "--reg-loss", "giou", "--compile-loss", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)  # compiled for real: no fallback
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["status"] == "ok" and payload["iterations"] == 3
    assert payload["config"]["train"]["compile_loss"] is True
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["compile_loss"] is True


# --- the fallback: no compiler, a loss that does not compile -------------------------------------------


def _no_compiler(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\n(details)")

    monkeypatch.setattr(compiled_loss, "_PROBED", {})
    monkeypatch.setattr(torch, "compile", broken)


def test_without_a_compiler_the_loss_warns_once_and_runs_eagerly(monkeypatch):
    _no_compiler(monkeypatch)
    eager = Loss.named("giou")
    fast = CompiledLoss(eager)
    with pytest.warns(CompileWarning, match=r"unusable here \(RuntimeError: InvalidCxxCompiler") as caught:
        value, grads = _value_and_grads(fast, _reg_case, 50, 0)
        again, _ = _value_and_grads(fast, _reg_case, 50, 0)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)  # one line, once
    want, want_grads = _value_and_grads(eager, _reg_case, 50, 0)
    assert torch.equal(value, want) and torch.equal(again, want) and torch.equal(grads[0], want_grads[0])
    assert fast.fallback.startswith("torch.compile is unusable") and fast.graphs == 0


def test_train_compile_loss_without_a_compiler_warns_and_trains_eagerly(monkeypatch):
    _no_compiler(monkeypatch)
    args = [*TINY, "--cls-loss", "focal", "--reg-loss", "giou", "--compile-loss"]
    with pytest.warns(CompileWarning, match="the loss runs eagerly"):
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["status"] == "ok" and payload["iterations"] == 3
    assert payload["config"]["train"]["compile_loss"] is True


def test_a_loss_that_does_not_compile_runs_eagerly(monkeypatch):
    def refusing_backend(graph, example_inputs):
        raise NotImplementedError("this backend compiles nothing")

    monkeypatch.setitem(compiled_loss._PROBED, refusing_backend, None)  # the toolchain "works"
    eager = Loss.named("focal")
    fast = CompiledLoss(eager, backend=refusing_backend)
    with pytest.warns(
        CompileWarning, match=r"loss focal did not compile \(NotImplementedError: this backend"
    ):
        value, _ = _value_and_grads(fast, _cls_case, 100, 0)
    assert torch.equal(value, _value_and_grads(eager, _cls_case, 100, 0)[0])


def test_a_loss_that_fails_eagerly_raises_its_own_error_as_without_compiling(monkeypatch):
    class Broken:
        branch, text = "reg", "broken"

        def __call__(self, **inputs):
            raise ValueError("a candidate that crashes")

    monkeypatch.setitem(compiled_loss._PROBED, "eager", None)
    inputs, _ = _reg_case(8, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompileWarning)  # no misleading "did not compile" warning
        with pytest.raises(ValueError, match="a candidate that crashes"):
            CompiledLoss(Broken(), backend="eager")(**inputs)


def test_dynamic_shapes_trace_once_for_every_size():
    # dynamo's "eager" backend traces like inductor (same guards, same recompiles) without compiling C++
    eager = Loss.named("giou")
    fast = CompiledLoss(eager, backend="eager")
    for step, n in enumerate((40, 33, 400, 2, 57)):
        inputs, _ = _reg_case(n, seed=step)
        torch.testing.assert_close(fast(**inputs), eager(**inputs))
    assert fast.fallback is None and fast.graphs == 1


# --- the setting: config, task settings, flags ---------------------------------------------------------


def test_setting_is_off_by_default_and_old_configs_without_it_load():
    assert TrainConfig().compile_loss is False
    raw = ExperimentConfig().to_dict()
    del raw["train"]["compile_loss"]  # a config.yaml written before the setting existed
    assert ExperimentConfig.from_dict(raw).train.compile_loss is False
    raw["train"]["compile_loss"] = True
    assert ExperimentConfig.from_dict(raw).train.compile_loss is True
    with pytest.raises(ValueError, match="compile_loss must be true or false"):
        validate_train_config(TrainConfig(iterations=1, compile_loss="yes"))


def test_search_flag_becomes_a_task_train_setting_recorded_in_the_task_config():
    settings = task_settings({"compile_loss": True, "preset": "tiny"})
    assert settings == {"preset": "tiny", "train": {"compile_loss": True}}
    task = DetectionTask.from_settings(settings)
    assert task.experiment.train.compile_loss is True
    assert task.config()["train"]["compile_loss"] is True
    assert "compile_loss" not in task_settings({"compile_loss": None}).get("train", {})  # flag left off


def test_task_builds_heads_with_compiled_losses_only_when_asked():
    on = DetectionTask.from_settings({"preset": "tiny", "train": {"compile_loss": True}})
    head = on.build("focal", "default", seed=0).model.head
    assert isinstance(head.cls_loss, CompiledLoss) and head.reg_loss is None  # stock loss: nothing to compile
    off = DetectionTask.from_settings({"preset": "tiny"})
    assert isinstance(off.build("focal", "giou", seed=0).model.head.cls_loss, Loss)


def test_compile_losses_passes_none_and_wrapped_losses_through_and_pickles():
    giou = Loss.named("giou")
    assert compile_losses(None, giou, enabled=False) == (None, giou)
    cls, reg = compile_losses(None, giou, enabled=True)
    assert cls is None and isinstance(reg, CompiledLoss) and reg.branch == "reg" and reg.text == giou.text
    assert compiled_loss.compiled(reg) is reg
    copy = pickle.loads(pickle.dumps(reg))
    assert isinstance(copy, CompiledLoss) and copy.loss == giou and copy.graphs == 0
