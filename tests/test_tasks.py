"""The proxy-task protocol: the registry, a stand-in task through the search, the detection task's settings
and config round trip, and the import boundary between the search and the detection layer."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import autoloss
from autoloss.cli import cli
from autoloss.evolution.config import ConfigError, SearchConfig, budget_config, resolve_task
from autoloss.tasks import RunResult, Schedule, TaskError, TrainReport, load_task, task_factory

ROOT = Path(__file__).resolve().parents[1]
ECHO = str(ROOT / "tests" / "tasks" / "echo_task.py")
sys.path.insert(0, str(ROOT / "tests" / "tasks"))
from echo_task import EchoTask, expected_ap  # noqa: E402

TINY_SEARCH = {
    "evolution": {
        "branch": "both",
        "generations": 1,
        "offspring": 80,
        "top_k": 2,
        "parents": 2,
        "rungs": "1x1,2x2",
        "final_seeds": 3,
    },
}


# --- the registry ------------------------------------------------------------------------------------
def test_a_task_is_found_by_file_by_module_and_built_in():
    from_file = load_task(f"{ECHO}:make_task")  # a module of its own, named after the file's path
    assert type(from_file).__name__ == "EchoTask" and load_task(f"{ECHO}:make_task") is not from_file
    assert isinstance(load_task("echo_task:make_task", {"branch": "cls-softmax"}), EchoTask)
    assert load_task("detection", {"preset": "tiny"}).cls_branch == "cls-sigmoid"
    assert load_task("detection", {"detector": "faster_rcnn"}).cls_branch == "cls-softmax"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("yolo", "unknown task 'yolo'"),
        ("no_such_module:make", "no module 'no_such_module'"),
        (f"{ECHO}:missing", "has no 'missing'"),
        ("missing_dir/task.py:make", "does not exist"),
        (f"{ECHO}:not_a_task", "returned str, not an autoloss.tasks.ProxyTask"),
    ],
)
def test_a_bad_task_name_says_what_is_wrong(name, message):
    with pytest.raises(TaskError, match=message):
        load_task(name)


def test_a_schedule_has_exactly_one_length_and_scales():
    with pytest.raises(TaskError, match="exactly one"):
        Schedule()
    with pytest.raises(TaskError, match="positive integer"):
        Schedule(iterations=0)
    s = Schedule(iterations=30, seed=4)
    assert s.scaled(3).iterations == 90 and s.scaled(3).seed == 4
    assert Schedule(epochs=2).scaled(2).epochs == 4
    assert Schedule.from_dict(s.to_dict()) == s


# --- the protocol's run() contains failures ----------------------------------------------------------
class _Breaks(EchoTask):
    def __init__(self, where: str):
        super().__init__({})
        self.where = where

    def train(self, model, schedule, progress=None):
        if self.where == "train":
            return TrainReport("diverged", "loss 1e9 at iteration 3", 3, 0.1, None, [1.0, float("nan")])
        return super().train(model, schedule, progress)

    def evaluate(self, model, schedule):
        if self.where == "evaluate":
            raise RuntimeError("no detections")
        return super().evaluate(model, schedule)


def test_run_turns_every_failure_into_a_result():
    schedule = Schedule(iterations=5, seed=1)
    ok = EchoTask({}).run("Neg(X)", "Sub(1,Div(I,U))", schedule)
    assert ok.status == "ok" and ok.ap == expected_ap("Neg(X)", "Sub(1,Div(I,U))", 1, 5)
    assert ok.config["schedule"]["iterations"] == 5 and ok.config["branch"] == "cls-sigmoid"
    unbuildable = EchoTask({}).run("Log(Neg(X))", "default", schedule)
    assert unbuildable.status == "failed" and "cannot build" in unbuildable.reason
    diverged = _Breaks("train").run("Neg(X)", "default", schedule)
    assert diverged.status == "diverged" and diverged.metrics == {} and diverged.loss_curve == [1.0, None]
    failed = _Breaks("evaluate").run("Neg(X)", "default", schedule)
    assert failed.status == "failed" and failed.reason == "evaluation: RuntimeError: no detections"
    assert RunResult.from_dict(json.loads(failed.to_json())) == failed


# --- a whole search through a user's task ------------------------------------------------------------
@pytest.mark.slow
def test_a_search_trains_only_through_the_task_on_process_workers(tmp_path):
    """A task from a file outside the package, loaded by spawned workers; every result is the task's."""
    summary = autoloss.search(
        tmp_path / "run",
        budget="smoke",
        task={"name": f"{ECHO}:make_task", "iterations": 7},
        backend={"workers": 2},
        **TINY_SEARCH,
    )
    assert summary["table"]["default"]["mean"] > 0
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["task"]["name"] == f"{ECHO}:make_task" and cfg["task"]["settings"] == {"branch": "cls-sigmoid"}
    records = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    assert len(records) > 10
    for r in records:
        iterations = 7 * r["multiplier"]
        assert r["result"]["metrics"]["AP"] == expected_ap(r["cls"], r["reg"], r["seed"], iterations)
    # resume loads the task again and finds everything done
    again, _ = autoloss.evolution.api.resume_search(tmp_path / "run")
    assert again["table"] == summary["table"]


def test_the_task_factory_function_itself_can_be_passed(tmp_path):
    from echo_task import make_task

    cfg = budget_config("smoke").replace(task={"name": autoloss.tasks.name_of(make_task)})
    assert resolve_task(cfg).task.name == "echo_task:make_task"
    with pytest.raises(TaskError, match="module-level function"):
        autoloss.tasks.name_of(lambda settings: EchoTask(settings))


def test_a_task_with_no_length_of_its_own_needs_one():
    cfg = budget_config("smoke").replace(task={"name": f"{ECHO}:make_task", "iterations": None})
    with pytest.raises(ConfigError, match="no length of its own"):
        resolve_task(cfg)


def test_task_errors_from_the_cli_are_one_line(tmp_path):
    r = CliRunner().invoke(
        cli, ["search", "--task", "yolo", "--budget", "smoke", "--out", str(tmp_path / "x")]
    )
    assert r.exit_code == 2 and "unknown task 'yolo'" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["train", "--task", f"{ECHO}:nope", "--iterations", "2"])
    assert r.exit_code == 2 and "has no 'nope'" in r.output


# --- the detection task's settings -------------------------------------------------------------------
def test_the_detection_task_config_round_trips_through_its_factory():
    task = load_task("detection", {"preset": "tiny", "data": "shapes", "train": {"lr": 0.01}})
    again = task_factory("detection")(task.config())
    assert again.config() == task.config() and again.experiment == task.experiment
    assert task.config()["train"]["lr"] == 0.01 and "iterations" not in task.config()["train"]
    assert task.default_length() == (40, None)  # the tiny preset's


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"learning_rate": 0.1}, "unknown detection task setting.*learning_rate"),
        ({"train": {"iterations": 5}}, "unknown train setting.*iterations"),
        ({"preset": "yolo"}, "unknown preset 'yolo'"),
        ({"detector": "yolo"}, "unknown detector 'yolo'"),
    ],
)
def test_bad_detection_settings_are_refused_by_name(settings, message):
    cfg = SearchConfig().replace(task={"settings": settings})
    with pytest.raises((TaskError, ConfigError), match=message):
        resolve_task(cfg)


def test_a_version_4_run_directory_trains_what_version_3_trained():
    """The same trial, reached through the v3 proxy section (migrated) and the v4 task section."""
    from autoloss.evolution.proxy import base_schedule

    v4 = resolve_task(budget_config("smoke"))
    raw = {**v4.to_dict(), "version": 3, "proxy": {"preset": "tiny", "data": "shapes", "iterations": 30}}
    del raw["task"]
    v3 = SearchConfig.from_dict(raw)
    assert v3.load_task().experiment == v4.load_task().experiment
    assert base_schedule(v3) == base_schedule(v4)


# --- the import boundary -----------------------------------------------------------------------------
SEARCH_SIDE = ("evolution", "tasks", "transfer", "fidelity")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("package", SEARCH_SIDE)
def test_the_search_side_never_imports_the_detection_layer(package):
    """Lazy imports inside functions count too: the search reaches a detector only through the protocol."""
    files = sorted((ROOT / "src" / "autoloss" / package).glob("*.py"))
    assert files
    offending = {
        f"{path.name}: {name}"
        for path in files
        for name in _imports(path)
        if name == "autoloss.detection" or name.startswith("autoloss.detection.")
    }
    assert not offending


def test_the_boundary_check_sees_a_lazy_import(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from autoloss.detection.runner import build_for\n")
    assert _imports(path) == ["autoloss.detection.runner"]


# --- transfer and fidelity train through the same protocol -------------------------------------------
def test_transfer_and_fidelity_train_a_users_task(tmp_path):
    r = CliRunner().invoke(
        cli,
        [
            "transfer", "--task", f"{ECHO}:make_task", "--cls-loss", "bce", "--detectors", "fcos",
            "--data", "shapes", "--seeds", "1", "--iterations", "4", "--schedule", "1", "--no-named",
            "--backend", "serial", "--out", str(tmp_path / "transfer"),
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    records = json.loads((tmp_path / "transfer" / "records.json").read_text())
    assert {rec["label"] for rec in records} == {"default", "published", "found"}
    for rec in records:
        assert rec["metrics"]["AP"] == expected_ap(rec["cls"], rec["reg"], rec["seed"], 4)
    r = CliRunner().invoke(
        cli,
        [
            "fidelity", "--task", f"{ECHO}:make_task", "--proxy", "fcos:shapes:64:3", "--target",
            "fcos:shapes:64:9", "--seeds", "1", "--backend", "serial", "--out", str(tmp_path / "fidelity"),
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "fidelity" / "fidelity.md").is_file()
    cells = sorted(p.name for p in (tmp_path / "fidelity" / "tasks").iterdir())
    assert cells and all("-echo_task.make_task-" in name for name in cells)
