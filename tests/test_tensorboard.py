"""TensorBoard event files of a search, read back with TensorBoard's own reader and checked against the run's
journals: a whole search on the process backend, a killed and resumed one, a lost mark, a failing writer
and a missing extra. Searches use the stand-in task (no detector is trained)."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from autoloss.cli import cli
from autoloss.report.tensorboard import (
    FOLDER,
    MARK,
    STAGES,
    SearchBoard,
    TensorBoardMissing,
    TensorBoardWarning,
)
from search_helpers import ECHO, kill_search_after

# The smoke budget on the stand-in task, with fewer offspring: screening is what such a search spends.
ARGS = ["--task", f"{ECHO}:make_task", "--budget", "smoke", "--offspring", "100"]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard shows them (a resume's purge applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _search(out: Path, *extra: str) -> None:
    r = CliRunner().invoke(cli, ["search", *ARGS, *extra, "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    # The process backend: trainings finish in worker processes, TensorBoard is written by this one.
    out = tmp_path_factory.mktemp("tb") / "run"
    _search(out, "--backend", "process", "--workers", "2")
    return out


def assert_mirrors_journals(run: Path) -> None:
    """Every scalar equals what the journals (evaluations, generations, events) say, at its step, once."""
    evaluations = _jsonl(run / "evaluations.jsonl")
    got = _scalars(run / FOLDER / "trainings")
    expected: dict[str, list[tuple[int, float]]] = {}
    for i, r in enumerate(evaluations):  # step: the training's line in the journal
        res = r["result"]
        expected.setdefault("training/seconds", []).append((i, res["seconds"]))
        if res["status"] == "ok":
            tag = "training/ap" if r.get("split", "val") == "val" else "training/test_ap"
            expected.setdefault(tag, []).append((i, res["metrics"]["AP"]))
    assert set(got) == set(expected)
    for tag, points in expected.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6, abs=1e-7), tag

    default_ap = statistics.fmean(
        r["result"]["metrics"]["AP"]
        for r in evaluations
        if (r["cls"], r["reg"], r["seed"], r["multiplier"]) == ("default", "default", 0, 1)
        and r.get("split", "val") == "val"
    )
    generations = _jsonl(run / "generations.jsonl")
    events = _jsonl(run / "events.jsonl")
    for branch in {g["branch"] for g in generations}:
        got = _scalars(run / FOLDER / branch)
        mine = [g for g in generations if g["branch"] == branch]
        for stage in STAGES:
            assert got[f"funnel/{stage}"] == [(g["generation"], g["counts"][stage]) for g in mine]
        assert [s for s, _ in got["fitness/best_so_far"]] == [g["generation"] for g in mine]
        assert [v for _, v in got["fitness/best_so_far"]] == pytest.approx([g["best_ap"] for g in mine])
        assert [v for _, v in got["default/ap"]] == pytest.approx([default_ap] * len(mine))
        with_proxy = [g for g in mine if g["aps"]]
        assert [v for _, v in got.get("fitness/rung0_best", [])] == pytest.approx(
            [max(g["aps"]) for g in with_proxy]
        )
        for g in mine:
            # rung 0: 1 seed at 1x for each candidate the generation trained; promotions: their seeds
            trained = [e for e in events if e["unit"] == g["unit"] and e["stage"] in ("proxy", "promote")]
            spent = sum(len(e["seeds"]) for e in trained)
            lengths = sum(len(e["seeds"]) * e.get("multiplier", 1) for e in trained)
            assert (g["generation"], spent) in got["spent/trainings"]
            assert (g["generation"], lengths) in got["spent/proxy_lengths"]
            assert (g["generation"], 30 * lengths) in got["spent/iterations"]  # smoke: 30 per length


@pytest.mark.slow
def test_a_search_writes_tensorboard_that_matches_its_journals(finished):
    assert sorted(p.name for p in (finished / FOLDER).iterdir()) == ["cls-sigmoid", "reg", "trainings", MARK]
    assert_mirrors_journals(finished)
    mark = json.loads((finished / FOLDER / MARK).read_text())
    assert mark == {
        "trainings": len(_jsonl(finished / "evaluations.jsonl")),
        "generations": {"cls-sigmoid": 2, "reg": 2},
    }


@pytest.mark.slow
def test_a_killed_search_resumed_appends_without_duplicate_steps(finished, tmp_path):
    out = tmp_path / "killed"
    # Past the baseline, in the middle of a generation: some trainings are written past the mark.
    assert kill_search_after([*ARGS, "--backend", "serial"], out, finished=9) >= 9
    assert (out / FOLDER / "trainings").is_dir() and not (out / "summary.json").exists()
    r = CliRunner().invoke(cli, ["resume", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert_mirrors_journals(out)  # one value per step, each the journal's
    # ... and the generations read as in the run that was never interrupted.
    for branch in ("cls-sigmoid", "reg"):
        a, b = _scalars(finished / FOLDER / branch), _scalars(out / FOLDER / branch)
        for tag in set(a) | set(b):
            if not tag.endswith("_seconds"):
                assert [s for s, _ in b[tag]] == [s for s, _ in a[tag]], tag
                assert [v for _, v in b[tag]] == pytest.approx([v for _, v in a[tag]]), tag


@pytest.mark.slow
def test_a_lost_mark_rewrites_everything_once(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / FOLDER / MARK).unlink()
    r = CliRunner().invoke(cli, ["resume", str(run), "--quiet"])  # every unit done: outputs only
    assert r.exit_code == 0, r.output
    assert len(list((run / FOLDER / "trainings").glob("events.out.tfevents.*"))) == 2
    assert_mirrors_journals(run)


@pytest.mark.slow
def test_a_failing_writer_warns_and_stops_only_tensorboard(finished, tmp_path):
    class Full:
        def __init__(self, **kwargs):
            pass

        def add_scalar(self, *args, **kwargs):
            raise OSError(28, "No space left on device")

    board = SearchBoard()
    board._writer_class = Full
    run = tmp_path / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns(FOLDER))  # all to write again
    with pytest.warns(TensorBoardWarning, match="No space left on device"):
        board({"type": "start", "run": str(run), "completed": []})
    assert board.stopped is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        board({"type": "unit-done", "unit": "reg:0", "proxy_count": 1})  # ignored from now on
    board.close()


def test_without_the_extra_asking_for_tensorboard_names_it(monkeypatch, tmp_path):
    # As if the tensorboard package were not installed.
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(TensorBoardMissing, match=r"pip install 'autoloss\[tensorboard\]'"):
        SearchBoard()
    out = tmp_path / "run"
    r = CliRunner().invoke(cli, ["search", *ARGS, "--backend", "serial", "--tensorboard", "--out", str(out)])
    assert r.exit_code == 2 and "pip install 'autoloss[tensorboard]'" in r.output
    assert "Traceback" not in r.output and not out.exists()  # refused before the run started


@pytest.mark.slow
def test_without_the_extra_a_default_run_goes_on_with_a_note(finished, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    run = tmp_path / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns(FOLDER))
    r = CliRunner().invoke(cli, ["resume", str(run)])
    assert r.exit_code == 0, r.output
    assert "no TensorBoard files for this run" in r.output and "autoloss[tensorboard]" in r.output
    assert not (run / FOLDER).exists()
    r = CliRunner().invoke(cli, ["resume", str(run), "--no-tensorboard"])
    assert r.exit_code == 0 and "TensorBoard" not in r.output


@pytest.mark.slow
def test_the_leader_curves_hook_gets_each_generations_leaders(finished, tmp_path):
    calls = []
    board = SearchBoard(leaders=lambda writer, branch, gen, leaders: calls.append((branch, gen, leaders)))
    run = tmp_path / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns(FOLDER))
    units = json.loads((run / "checkpoint.json").read_text())["completed"]
    board({"type": "start", "run": str(run), "completed": units})  # catches up with the finished run
    board.close()
    generations = _jsonl(run / "generations.jsonl")
    assert [(b, g) for b, g, _ in calls] == [(g["branch"], g["generation"]) for g in generations]
    for (branch, _, leaders), gen in zip(calls, generations, strict=True):
        assert [x["text"] for x in leaders] == gen["parents"]  # best first
        for x in leaders:
            pair = ("default", x["text"]) if branch == "reg" else (x["text"], "default")
            assert all((t["cls"], t["reg"]) == pair for t in x["trainings"])


@pytest.mark.slow
def test_the_leaders_curves_are_an_image_per_generation(finished):
    import io

    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    generations = _jsonl(finished / "generations.jsonl")
    for branch in ("cls-sigmoid", "reg"):
        acc = EventAccumulator(str(finished / FOLDER / branch), size_guidance={"images": 0})
        acc.Reload()
        images = acc.Images("curves/leaders")
        # an image where the leaders (the parents, best first; three drawn) changed
        led, last = [], None
        for g in generations:
            if g["branch"] == branch and g["parents"] and tuple(g["parents"][:3]) != last:
                led.append(g["generation"])
                last = tuple(g["parents"][:3])
        assert led and [e.step for e in images] == led
        with Image.open(io.BytesIO(images[-1].encoded_image_string)) as picture:
            width, height = picture.size
            assert width > 400 and height > 200  # the figure's three columns, two rows
            assert len(picture.convert("L").getcolors(maxcolors=1 << 16) or []) > 10  # drawn, not blank
