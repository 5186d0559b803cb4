"""Named points where a fault-injection test can make the process die, as a crash would.

A kill from outside (a timer, a count of journal lines) lands wherever the process happens to be, so the
moments that matter most — between a training's result and its journal line, between a checkpoint's tmp
file and its rename — are hit by luck, if ever. A failpoint names such a moment in the code: with
`AUTOLOSS_FAILPOINT=name` (or `name:N`, the N-th time this process reaches it; 1 by default) the process
SIGKILLs itself there. SIGKILL and not an exception, so that no `finally`, `except` or `atexit` runs: what
is left on disk is exactly what a crash or the OOM killer would leave.

Unset, `failpoint(name)` is one lookup in `os.environ`: cheap enough for the search's hot paths.

Each point dies in the process that reaches it. The search's points (`POINTS`, all but "proxy-training")
run only in the search process; "proxy-training" runs where the training runs: in a worker with the
process backend (the worker dies and the search retries the training; Ray's workers too, where the
variable reaches them), in the search process with the serial backend (the search dies).

Workers inherit the variable and each counts on its own, so a fresh worker would die again on the retry;
a point that should fire once across all of them also takes `AUTOLOSS_FAILPOINT_ONCE=PATH`: the first
process to fire creates PATH, and once PATH exists the point no longer fires anywhere (a resume run with
the same environment included).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "AUTOLOSS_FAILPOINT"
ONCE_ENV = "AUTOLOSS_FAILPOINT_ONCE"

# The points placed in the code, and what is on disk when each fires. "write:<file>" fires inside the
# atomic write of any run-directory file (rundir._atomic_write), after the tmp file is whole and before
# the rename: e.g. "write:checkpoint.json", "write:summary.json", "write:report.md".
POINTS = {
    "screening": "a generation's screening, between its two phases; nothing of the unit on disk",
    "screened": "a generation's screening events appended, none of its proxy trainings run",
    "proxy-training": "inside a proxy training (the worker, or the search with the serial backend)",
    "proxy-result": "a training's result arrived in the search, its journal line not yet appended",
    "promoted": "a rung's promotion trained and its events appended, the generation not finished",
    "unit-done": "a unit finished (its events on disk), its checkpoint not yet written",
    "combine": "the combination's trainings journaled, its events not yet appended",
    "final": "the final re-trainings journaled, the summary not yet made",
    "outputs": "every unit checkpointed, the hall of fame and summary not yet written",
    "report": "report.md being made: the plots written, report.md not yet",
}

_hits: Counter[str] = Counter()


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get(ENV)
    if not spec:
        return None
    name, _, count = spec.rpartition(":")
    if name and count.isdigit():
        return name, int(count)
    return spec, 1


def failpoint(name: str) -> None:
    """Die here by SIGKILL if `AUTOLOSS_FAILPOINT` names this point (see the module docstring)."""
    if ENV not in os.environ:
        return
    armed = _armed()
    if armed is None or armed[0] != name:
        return
    _hits[name] += 1
    if _hits[name] != armed[1]:
        return
    once = os.environ.get(ONCE_ENV)
    if once:
        try:  # O_EXCL: of the processes that race here, exactly one creates it and dies
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)
