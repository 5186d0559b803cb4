"""Finding a proxy task by name: a built-in one, or a user's factory as `module:function` or
`path/to/file.py:function`.

A factory takes the task's settings (a dict; empty for its defaults) and returns a `ProxyTask`. Tasks
travel to worker processes as (name, settings), never as pickled objects, and each worker loads the
factory itself, so a user's task must be importable there: a module on the workers' `sys.path`, or a file
at the same path on every machine (a relative path is made absolute when the run starts).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autoloss.tasks.protocol import ProxyTask, TaskError

# Built-in tasks, as import paths so that naming one does not import torch.
BUILTIN: dict[str, str] = {"detection": "autoloss.detection.task:detection_task"}
DEFAULT_TASK = "detection"

Factory = Callable[[Mapping[str, Any]], ProxyTask]


def canonical_name(name: str) -> str:
    """`name` as a run directory records it: a file path made absolute (checked to exist)."""
    if name in BUILTIN:
        return name
    target, _ = _split(name)
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise TaskError(f"--task {name}: file {target!r} does not exist")
        return f"{path.resolve()}:{name.rsplit(':', 1)[1]}"
    return name


def task_factory(name: str) -> Factory:
    """The factory named `name` (TaskError naming what is missing)."""
    target, attr = _split(BUILTIN.get(name, name))
    if target.endswith(".py"):
        module = _module_from_file(name, target)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as err:
            if err.name and target.startswith(err.name):
                raise TaskError(
                    f"--task {name}: no module {target!r} on sys.path (a file is given as "
                    f"path/to/file.py:{attr})"
                ) from None
            raise TaskError(f"--task {name}: importing {target} failed: {err}") from err
        except Exception as err:
            raise TaskError(f"--task {name}: importing {target} failed: {type(err).__name__}: {err}") from err
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise TaskError(f"--task {name}: {target} has no {attr!r}")
    if not callable(factory):
        raise TaskError(f"--task {name}: {attr} in {target} is not callable")
    return factory


def load_task(name: str, settings: Mapping[str, Any] | None = None) -> ProxyTask:
    """The task `name` built from `settings`."""
    factory = task_factory(name)
    task = factory(dict(settings or {}))
    if not isinstance(task, ProxyTask):
        raise TaskError(
            f"--task {name}: the factory returned {type(task).__name__}, not an autoloss.tasks.ProxyTask"
        )
    return task


def task_key(name: str, settings: Mapping[str, Any]) -> str:
    """Equal for equal (name, settings): the key under which a process keeps a task it has built."""
    return json.dumps([name, settings], sort_keys=True, default=str)


def name_of(factory: Callable[..., Any]) -> str:
    """`module:qualname` of a factory object, if workers can import it by that name."""
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        raise TaskError(
            f"task factory {factory!r} must be a module-level function of an importable module (worker "
            "processes load it by name); pass 'module:function' or 'path/to/file.py:function'"
        )
    return f"{module}:{qualname}"


def _split(name: str) -> tuple[str, str]:
    target, sep, attr = name.rpartition(":")
    if not sep or not target or not attr:
        raise TaskError(
            f"unknown task {name!r}: give a built-in task ({', '.join(BUILTIN)}), module:function or "
            "path/to/file.py:function"
        )
    return target, attr


def _module_from_file(name: str, path: str) -> Any:
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise TaskError(f"--task {name}: file {path!r} does not exist")
    # One module per file, under a name derived from its path: loading it twice reuses the first.
    module_name = f"autoloss_task_{file.stem}_{hashlib.sha1(str(file).encode()).hexdigest()[:8]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise TaskError(f"--task {name}: cannot load {path!r} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise TaskError(f"--task {name}: running {path} failed: {type(err).__name__}: {err}") from err
    return module
