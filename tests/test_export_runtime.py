"""The runtime an exported file carries is the runtime modules' own code: the modules import from the
package (where the other export tests exercise them), the exported file holds their source unchanged, and
the generator refuses a module it could not carry unchanged, naming it."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import sys
import types
from importlib import resources
from pathlib import Path

import pytest
import torch

from autoloss.export import export, mmdet_format, torch_format
from autoloss.export.generated import (
    RUNTIME_PACKAGE,
    RuntimeLayoutError,
    bound_names,
    load_runtime,
    parse_runtime,
    runtime_modules,
    runtime_source,
)

FORMATS = {"torch": torch_format.RUNTIME, "mmdet": mmdet_format.RUNTIME}
# What each format's file holds, in order: a module after the ones it imports from.
LAYOUT = {"torch": ["common", "torch_modules"], "mmdet": ["common", "torch_modules", "mmdet_modules"]}
TARGETS = ["cse-b-cls", "cse-a-cls", "giou"]  # cls-sigmoid, cls-softmax, reg


def runtime(name: str) -> types.ModuleType:
    return importlib.import_module(f"{RUNTIME_PACKAGE}.{name}")


def hide_mmdet(monkeypatch) -> None:
    # Whether mmdet imports here or not, the exported file takes its no-registry path.
    monkeypatch.setitem(sys.modules, "mmdet", None)
    monkeypatch.setitem(sys.modules, "mmdet.registry", None)


def load_exported(text: str, name: str, tmp_path: Path, monkeypatch) -> types.ModuleType:
    """Import an exported file under `name`, registered in sys.modules so `inspect` finds its classes."""
    file = tmp_path / f"{name}.py"
    file.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


# --- the package's modules are the exported ones --------------------------------------------------------


def test_every_runtime_module_is_exported_and_imports_from_the_package():
    folder = Path(str(resources.files(RUNTIME_PACKAGE)))
    on_disk = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    exported = {m.name for roots in FORMATS.values() for m in runtime_modules(roots)}
    assert exported == on_disk  # no runtime module is tested but never exported
    for name in on_disk:
        module = runtime(name)
        # The file the generator reads is the one the tests (and the other runtime modules) import.
        assert Path(module.__file__).resolve() == (folder / f"{name}.py").resolve()
        assert sys.modules[f"{RUNTIME_PACKAGE}.{name}"] is module


def test_a_module_builds_on_the_package_module_itself_not_a_copy():
    common, torch_modules, mmdet_modules = (runtime(n) for n in ("common", "torch_modules", "mmdet_modules"))
    assert torch_modules.reduce_loss is common.reduce_loss
    assert torch_modules.sigmoid_cls_inputs is common.sigmoid_cls_inputs
    assert issubclass(mmdet_modules._MMDetRegLoss, torch_modules._RegLoss)
    assert mmdet_modules.reg_inputs is common.reg_inputs


@pytest.mark.parametrize("fmt", FORMATS)
def test_runtime_layout_of_each_format(fmt):
    assert [m.name for m in runtime_modules(FORMATS[fmt])] == LAYOUT[fmt]


# --- the exported file holds the modules' own source ---------------------------------------------------


@pytest.mark.parametrize("name", LAYOUT["mmdet"])
def test_only_the_header_is_left_out(name):
    source = inspect.getsource(runtime(name))
    module = parse_runtime(name, source)
    header = ast.parse(module.header).body
    assert header and all(
        isinstance(node, (ast.Import, ast.ImportFrom))
        or (i == 0 and isinstance(node, ast.Expr) and isinstance(node.value.value, str))
        for i, node in enumerate(header)
    )
    assert source.startswith(module.header)
    # Apart from the header, only blank lines between it and the code are not in the body.
    assert source[len(module.header) :].strip("\n") + "\n" == module.body
    assert module == load_runtime(name)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_runtime_is_the_imported_modules_source(fmt, target):
    text = export(target, fmt)
    bodies = [parse_runtime(name, inspect.getsource(runtime(name))).body for name in LAYOUT[fmt]]
    code = "\n\n".join(bodies)
    assert text.count(code) == 1
    assert runtime_source(FORMATS[fmt])[1] == code
    start = text.index(code)
    assert text.index("# --- operators") < start < text.index("# --- the found losses")
    # What the left-out headers import, the file's own imports bind.
    imports = bound_names(n for n in ast.parse(text).body if isinstance(n, (ast.Import, ast.ImportFrom)))
    for name in LAYOUT[fmt]:
        assert load_runtime(name).imported <= imports


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_functions_and_classes_have_the_modules_source(fmt, tmp_path, monkeypatch):
    hide_mmdet(monkeypatch)
    exported = load_exported(export("giou", fmt), f"runtime_{fmt}", tmp_path, monkeypatch)
    checked = 0
    for name in LAYOUT[fmt]:
        module = runtime(name)
        for attr, obj in vars(module).items():
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__:
                assert inspect.getsource(getattr(exported, attr)) == inspect.getsource(obj), attr
                checked += 1
            elif isinstance(obj, (int, float, str, tuple)) and not attr.startswith("__"):
                assert getattr(exported, attr) == obj, attr
    assert checked >= 10


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_file_imports_only_torch_and_the_standard_library(fmt):
    allowed = {"torch", *sys.stdlib_module_names} | ({"mmdet"} if fmt == "mmdet" else set())
    for node in ast.walk(ast.parse(export("giou", fmt))):
        if isinstance(node, ast.Import):
            roots = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level
            roots = {node.module.split(".")[0]}
        else:
            continue
        assert roots <= allowed, ast.unparse(node)


def test_runtime_bases_work_as_imported(monkeypatch):
    # A base from the package computes what the exported subclass does, with the same loss function.
    torch_modules = runtime("torch_modules")
    exported = types.ModuleType("giou_export")
    exec(compile(export("giou", "torch"), "giou_export.py", "exec"), exported.__dict__)

    class Reg(torch_modules._RegLoss):
        reads = exported.SearchedRegLoss.reads
        loss_fn = staticmethod(exported.reg_loss)

    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 25.0]])
    target = torch.tensor([[1.0, 0.0, 10.0, 12.0], [0.0, 0.0, 10.0, 10.0]])
    torch.testing.assert_close(
        Reg(loss_weight=3.0)(pred, target), exported.SearchedRegLoss(loss_weight=3.0)(pred, target)
    )


# --- what the generator cannot place stops the export, naming the module --------------------------------

HEAD = '"""A runtime module."""\n\nfrom __future__ import annotations\n\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (HEAD + "from .common import fit\n\nX = 1\n", "relative import"),
        (HEAD + "from autoloss.ops import OPS\n\nX = 1\n", "imports autoloss.ops"),
        (HEAD + "import numpy\n\nX = 1\n", "imports numpy"),
        (HEAD + "X = 1\n\nimport numpy as np\n", "imports numpy"),
        (HEAD + "def f():\n    from autoloss.export.runtime.common import fit\n", "imports autoloss.export"),
        (HEAD + "from autoloss.export.runtime.common import fit as f\n\nX = 1\n", "without `as`"),
        (HEAD + "from autoloss.export.runtime.common import *\n\nX = 1\n", "import them by name"),
        (HEAD + "import autoloss.export.runtime.common\n\nX = 1\n", "has no counterpart"),
        (HEAD + "from autoloss.export.runtime.common.x import fit\n\nX = 1\n", "not a sibling"),
        ('"""No future import."""\n\nimport torch\n\nX = 1\n', "lacks `from __future__"),
        (HEAD + "import torch\n", "no code after its imports"),
    ],
)
def test_what_a_standalone_file_cannot_carry_is_refused(text, message):
    with pytest.raises(RuntimeLayoutError, match=f"{RUNTIME_PACKAGE}.extra") as info:
        parse_runtime("extra", text)
    assert message in str(info.value)


def test_an_optional_dependency_behind_import_error_is_carried():
    text = HEAD + "try:\n    import numpy\nexcept ImportError:\n    numpy = None\n"
    module = parse_runtime("extra", text)
    assert module.body == "try:\n    import numpy\nexcept ImportError:\n    numpy = None\n"
    assert module.defines == {"numpy"}


def _with_extra(text: str):
    def load(name: str):
        return parse_runtime(name, text) if name == "extra" else load_runtime(name)

    return load


@pytest.mark.parametrize(
    ("text", "roots", "message"),
    [
        (
            HEAD + "from autoloss.export.runtime.common import no_such_name\n\nX = 1\n",
            ("extra",),
            "imports no_such_name, which common does not define",
        ),
        (
            HEAD + "def reduce_loss(values):\n    return values\n",
            ("torch_modules", "extra"),
            f"defines reduce_loss, as runtime module {RUNTIME_PACKAGE}.common does",
        ),
        (HEAD + "Tensor = None\n", ("torch_modules", "extra"), "defines Tensor, as an import"),
        (
            HEAD + "from autoloss.export.runtime.extra2 import Y\n\nX = 1\n",
            ("extra",),
            f"there is no runtime module {RUNTIME_PACKAGE}.extra2",
        ),
    ],
)
def test_modules_that_do_not_fit_one_namespace_are_refused(text, roots, message):
    with pytest.raises(RuntimeLayoutError, match=f"{RUNTIME_PACKAGE}.extra") as info:
        runtime_modules(roots, load=_with_extra(text))
    assert message in str(info.value)


def test_runtime_names_must_not_clash_with_the_generated_code():
    with pytest.raises(RuntimeLayoutError, match=f"{RUNTIME_PACKAGE}.common defines fit, as the generated"):
        runtime_source(("torch_modules",), taken={"fit"})


def test_runtime_modules_importing_each_other_are_refused():
    texts = {
        "a": HEAD + "from autoloss.export.runtime.b import Y\n\nX = 1\n",
        "b": HEAD + "from autoloss.export.runtime.a import X\n\nY = 1\n",
    }
    with pytest.raises(RuntimeLayoutError, match="import each other: a -> b -> a"):
        runtime_modules(["a"], load=lambda name: parse_runtime(name, texts[name]))
