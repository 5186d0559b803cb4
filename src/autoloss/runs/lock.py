"""One writer per run directory: `<run>/.lock`, held for the whole of a search or a resume.

The lock is an `fcntl.flock` on `.lock`, not an exclusive create (`O_EXCL`) of it. With an exclusive
create, a killed search leaves the file behind and the next one must guess from the PID inside whether its
owner still runs: a PID reused by another program reads as "alive", and two processes that both judge a lock
stale can each delete the other's fresh one. A flock belongs to the open file, so the kernel drops it the
moment its process dies, however it dies; whether the lock is held is never a guess. The file's content
(PID, host, start time) only says who holds it, for the error message, and, when the lock is free but the
file is still there, which dead process left it (the takeover is reported as a `RunDirWarning`).

Workers do not inherit the lock: the process backend spawns them (no fork) and Python opens files
non-inheritable. Where `fcntl` does not exist (Windows) the directory is not locked.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from autoloss.runs.rundir import LOCK_NAME, RunDirError, RunDirWarning


class RunDirBusy(RunDirError):
    """Another process is searching in this run directory now."""


class RunLock:
    """`with RunLock(path): ...` holds `path/.lock` or raises `RunDirBusy` at once; the directory must exist.
    Released (and the file removed) when the block ends, also by an exception."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = self.path / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # no flock on this platform: run unlocked rather than not at all
            return
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd, wait=True)
                os.close(fd)
                raise RunDirBusy(
                    f"run directory {self.path} is in use by {_describe(holder)}; wait for it or stop it"
                ) from None
            except OSError as exc:
                os.close(fd)
                raise RunDirError(f"cannot lock {self.file}: {exc.strerror or exc}") from None
            # A holder that released between our open and our flock removed the file we opened: lock the
            # file that is at the path now, or two processes could each hold a different one.
            try:
                same = os.stat(self.file).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _holder(fd, wait=False)
        if stale.get("pid") is not None:
            warnings.warn(
                f"run directory {self.path}: took over the stale lock of {_describe(stale)}, "
                "which is no longer running",
                RunDirWarning,
                stacklevel=3,
            )
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
            os.fsync(fd)
        except OSError as exc:  # a full disk: the search could not write its journal either
            os.close(fd)
            raise RunDirError(
                f"cannot lock {self.path}: cannot write {self.file} ({exc.strerror or exc})"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Remove the file while still holding the lock, so no one can take a lock on it and lose it.
        try:
            os.unlink(self.file)
        except OSError:
            pass
        os.close(self._fd)  # drops the flock
        self._fd = None

    def _open(self) -> int:
        try:
            return os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            reason = exc.strerror or exc
            raise RunDirError(f"cannot lock {self.path}: cannot open {self.file} ({reason})") from None


def _holder(fd: int, wait: bool) -> dict[str, Any]:
    """Who wrote the lock file, or {}. With `wait`, give a holder that has just locked it a moment to
    write itself in."""
    for _ in range(20 if wait else 1):
        raw = os.pread(fd, 4096, 0)
        try:
            holder = json.loads(raw)
            if isinstance(holder, dict):
                return holder
        except ValueError:
            pass
        if raw or not wait:  # not a holder's half-written content: a file someone else wrote
            return {}
        time.sleep(0.01)
    return {}


def _describe(holder: dict[str, Any]) -> str:
    if holder.get("pid") is None:
        return "another process"
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    started = f" (started {holder['started']})" if holder.get("started") else ""
    return f"process {holder['pid']}{where}{started}"
