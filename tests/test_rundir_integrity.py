"""Nothing lost, nothing crashes: torn and corrupt journal lines, failed writes, and the lock that keeps a
second search or resume out of a run directory in use."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import autoloss.runs.rundir as rundir
from autoloss.cli import cli
from autoloss.evolution.api import resume_search, run_search
from autoloss.evolution.config import budget_config
from autoloss.runs.lock import LOCK_NAME, RunDirBusy, RunLock
from autoloss.runs.rundir import RunDir, RunDirError, RunDirWarning
from search_helpers import ECHO

JOURNAL = "evaluations.jsonl"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _re(path: Path) -> str:
    return re.escape(str(path))


# --- journals ----------------------------------------------------------------------------------------
def test_a_torn_last_line_is_dropped_then_cut_off_before_the_next_append(tmp_path):
    run = RunDir(tmp_path)
    run.append(JOURNAL, [{"id": "a"}, {"id": "b"}])
    with open(tmp_path / JOURNAL, "ab") as fh:  # a kill in the middle of writing the third record
        fh.write(b'{"id": "c", "res')
    assert run.read(JOURNAL) == [{"id": "a"}, {"id": "b"}]
    assert run.torn == {JOURNAL: 16}  # the caller can tell that something was dropped
    with pytest.warns(RunDirWarning, match="cut off a torn last line"):
        run.append(JOURNAL, [{"id": "c2"}])
    # the next record starts on its own line instead of being glued onto the torn one
    assert _lines(tmp_path / JOURNAL) == ['{"id": "a"}', '{"id": "b"}', '{"id": "c2"}']
    assert run.read(JOURNAL) == [{"id": "a"}, {"id": "b"}, {"id": "c2"}] and run.torn == {}


def test_a_journal_that_is_only_a_torn_line_is_emptied_and_a_whole_last_line_keeps_its_record(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / JOURNAL).write_bytes(b'{"id": "\xc3')  # cut inside a UTF-8 character, too
    assert run.read(JOURNAL) == [] and run.torn == {JOURNAL: 9}
    with pytest.warns(RunDirWarning):
        run.append(JOURNAL, [{"id": "a"}])
    assert _lines(tmp_path / JOURNAL) == ['{"id": "a"}']
    # killed after the record but before its newline: the record is whole, so it is kept
    (tmp_path / "events.jsonl").write_text('{"id": "x"}\n{"id": "y"}')
    assert run.read("events.jsonl") == [{"id": "x"}, {"id": "y"}] and "events.jsonl" not in run.torn
    run.append("events.jsonl", [{"id": "z"}])
    assert _lines(tmp_path / "events.jsonl") == ['{"id": "x"}', '{"id": "y"}', '{"id": "z"}']


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('{"id": "a"}\n{"id": "b", "re{"id": "c"}\n{"id": "d"}\n', 2),  # a torn line an append was glued to
        ('{"id": "a"}\n\n', 2),  # a blank line is not a record either
        ('{"id": "a"}\n[1, 2]\n{"id": "c"}\n', 2),  # JSON, but not a record
        ('garbage\n{"id": "b"}', 1),
    ],
)
def test_a_corrupt_complete_line_is_an_error_naming_the_file_and_line(tmp_path, text, line):
    (tmp_path / JOURNAL).write_text(text)
    with pytest.raises(RunDirError, match=rf"{JOURNAL}, line {line}: not a JSON record"):
        RunDir(tmp_path).read(JOURNAL)


# --- failed writes -----------------------------------------------------------------------------------
def test_a_checkpoint_is_fsynced_before_the_rename_and_its_directory_after(tmp_path, monkeypatch):
    calls = []
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd):
        calls.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        fsync(fd)

    def spy_replace(src, dst):
        calls.append("replace")
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    RunDir(tmp_path).save_checkpoint({"completed": []})
    assert calls == ["fsync file", "replace", "fsync dir"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
@pytest.mark.parametrize("where", ["open", "replace"])
def test_a_failed_checkpoint_write_is_one_error_and_the_previous_checkpoint_stays(
    tmp_path, monkeypatch, code, where
):
    run = RunDir(tmp_path)
    run.save_checkpoint({"completed": ["baseline"]})

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    # `open` fails on a read-only directory; the rename is where a full disk can show up last
    monkeypatch.setattr(*((rundir, "open") if where == "open" else (os, "replace")), fail, raising=False)
    message = f"cannot write {tmp_path}/checkpoint.json: {os.strerror(code)}; its previous version is kept"
    with pytest.raises(RunDirError, match=f"^{re.escape(message)}$"):
        run.save_checkpoint({"completed": ["baseline", "cls:0"]})
    monkeypatch.undo()
    assert run.load_checkpoint()["completed"] == ["baseline"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json"]  # no tmp file left


def test_a_failed_append_is_one_error_naming_the_journal(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    run.append(JOURNAL, [{"id": "a"}])

    def fail(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(
        RunDirError, match=rf"cannot append to {_re(tmp_path)}/{JOURNAL}: No space left on device"
    ):
        run.append(JOURNAL, [{"id": "b"}])


# --- the lock ----------------------------------------------------------------------------------------
HOLD = """
import sys
from autoloss.runs.lock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock on tmp_path until its stdin closes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "locked\n"
    yield proc
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_second_holder_fails_at_once_with_the_pid_then_gets_it_once_released(tmp_path, holder):
    with pytest.raises(RunDirBusy, match=rf"{_re(tmp_path)} is in use by process {holder.pid} \(started 20"):
        RunLock(tmp_path).acquire()
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0
    assert not (tmp_path / LOCK_NAME).exists()  # a normal exit removes the lock file
    with RunLock(tmp_path):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_the_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid  # left behind
    with pytest.warns(RunDirWarning, match=rf"took over the stale lock of process {holder.pid} "):
        with RunLock(tmp_path):
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_a_lock_file_naming_an_exited_process_is_stale(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    pid = int(gone.stdout)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": "h", "started": "2024-01-01"}))
    with pytest.warns(RunDirWarning, match=rf"stale lock of process {pid} on h \(started 2024-01-01\)"):
        with RunLock(tmp_path):
            pass


def test_the_lock_is_released_by_an_exception(tmp_path):
    with pytest.raises(KeyError):
        with RunLock(tmp_path):
            with pytest.raises(RunDirBusy, match=f"in use by process {os.getpid()}"):
                RunLock(tmp_path).acquire()  # a second lock in the same process is refused too
            raise KeyError("boom")
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path):
        pass


def test_search_and_resume_on_a_directory_in_use_are_one_line_and_exit_2(tmp_path, holder):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(budget_config("smoke").to_dict()))
    for args in (["resume", str(tmp_path)], ["search", "--out", str(tmp_path), "--overwrite"]):
        r = CliRunner().invoke(cli, [*args, "--quiet"])
        assert r.exit_code == 2, r.output
        assert f"is in use by process {holder.pid}" in r.output and "wait for it or stop it" in r.output
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert (tmp_path / "config.yaml").is_file()  # --overwrite deleted nothing


# --- a real search resumed after a torn journal line ------------------------------------------------
def tiny():
    return budget_config("smoke").replace(
        task={"name": f"{ECHO}:make_task", "iterations": 7},
        backend={"backend": "serial"},
        evolution={
            "branch": "both",
            "generations": 1,
            "offspring": 40,
            "top_k": 2,
            "parents": 2,
            "rungs": "1x1,2x2",
            "final_seeds": 2,
        },
    )


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    _, run = run_search(tiny(), tmp_path_factory.mktemp("integrity") / "ref")
    return run.path


@pytest.mark.slow
def test_a_resume_after_a_torn_evaluation_recomputes_it_and_ends_like_an_uninterrupted_run(
    tmp_path, reference
):
    expected = _lines(reference / JOURNAL)
    stop_after = len(expected) // 2

    def kill(event):  # stop in the middle of a unit, right after a training was journaled
        if event["type"] == "proxy-done" and len(_lines(tmp_path / "run" / JOURNAL)) >= stop_after:
            raise _Killed

    with pytest.raises(_Killed):
        run_search(tiny(), tmp_path / "run", progress=kill)
    journal = tmp_path / "run" / JOURNAL
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) - len(data.splitlines()[-1]) // 2 - 1])  # the last line, halved
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # the exception released the lock
    with pytest.warns(RunDirWarning, match="cut off a torn last line"):
        resume_search(tmp_path / "run")
    assert (tmp_path / "run" / "hall_of_fame.csv").read_text() == (reference / "hall_of_fame.csv").read_text()
    ids = [json.loads(line)["id"] for line in _lines(journal)]
    assert len(ids) == len(set(ids)) == len(expected)  # the torn one recomputed once, nothing else again


@pytest.mark.slow
def test_a_full_disk_mid_search_stops_it_with_the_last_checkpoint_intact(tmp_path, reference, monkeypatch):
    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "full")

    def fill_disk(event):  # from the second unit on, every rename fails as on a full disk
        if event["type"] == "unit" and event["unit"] != "baseline":
            monkeypatch.setattr(os, "replace", no_space)

    with pytest.raises(
        RunDirError, match=r"cannot write .*checkpoint.json: full; its previous version is kept"
    ):
        run_search(tiny(), tmp_path / "run", progress=fill_disk)
    monkeypatch.undo()
    run = RunDir.open(tmp_path / "run")
    assert run.load_checkpoint()["completed"] == ["baseline"]
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    resume_search(tmp_path / "run")
    assert (tmp_path / "run" / "hall_of_fame.csv").read_text() == (reference / "hall_of_fame.csv").read_text()
