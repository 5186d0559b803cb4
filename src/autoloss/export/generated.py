"""Pieces every exported Python file is made of: the runtime modules' code, the generated loss functions
and the class docstrings (formula, LaTeX, inputs, shapes)."""

from __future__ import annotations

import ast
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources

from autoloss.errors import AutolossError
from autoloss.expr.codegen import generate_source
from autoloss.loss import Loss
from autoloss.spaces.branches import branch as lookup_branch
from autoloss.spaces.named import DEFAULTS

WRAP = 100  # prose width in generated docstrings; formulas are never wrapped
RUNTIME_PACKAGE = "autoloss.export.runtime"

# What each raw input is (as `detection/loss_inputs.py` builds it), for docstrings.
INPUT_DOCS = {
    "cls-softmax": {
        "X": "logits [N, K+1]",
        "Y": "one-hot target [N, K+1]",
        "Z": "IoU of the RoI's decoded box with its ground truth for foreground RoIs, 1 for background; "
        "[N] or [N, K+1]; detached",
    },
    "cls-sigmoid": {
        "X": "logits [N, K]",
        "Q": "IoU of the positive's decoded box at its ground-truth class, 0 elsewhere [N, K]; detached",
        "PY": "one-hot target y [N, K]",
        "NY": "1 - y [N, K]",
    },
    "reg": {
        "I": "intersection area [N] of decoded xyxy boxes, pixel^2",
        "U": "union area + 1e-7 [N]",
        "E": "smallest enclosing box area + 1e-7 [N]",
    },
}
OUTPUT_DOCS = {
    "cls-softmax": "[N], one per RoI",
    "cls-sigmoid": "[N, K], one per element",
    "reg": "[N], one per box",
}


# --- runtime modules -------------------------------------------------------------------------------
# An exported file is one namespace: each runtime module's code is copied whole, after the sibling runtime
# modules it imports from, so that what it imports names the same objects in the file as in the package.
# Only the header is left out: its torch and standard-library imports join the file's imports, and its
# sibling imports are met by the copies above it. Whatever else a module holds either goes into the file
# as it is or stops the export with a RuntimeLayoutError naming the module.

STANDALONE = frozenset({"torch"})  # what an exported file may import besides the standard library


class RuntimeLayoutError(AutolossError):
    """A runtime module holds something an exported file cannot carry as it is; the message says what."""


@dataclass(frozen=True)
class RuntimeModule:
    """A runtime module split where the generator splits it: `header` (the module docstring, then
    `from __future__` and the other imports, up to the first other statement) is left out of exported
    files; `body`, everything after it, is copied into them unchanged."""

    name: str
    header: str
    body: str
    imports: tuple[str, ...]  # the header's standard-library and torch imports, one statement a line
    needs: tuple[str, ...]  # the sibling runtime modules the header imports from, in order
    takes: tuple[tuple[str, str], ...]  # (sibling, name) for each name imported from a sibling
    imported: frozenset[str]  # names the header's standard-library and torch imports bind
    defines: frozenset[str]  # names the body binds at module level


def _where(name: str) -> str:
    return f"runtime module {RUNTIME_PACKAGE}.{name}"


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(
        t is None or (isinstance(t, ast.Name) and t.id in ("ImportError", "ModuleNotFoundError"))
        for t in types
    )


def _check_import(name: str, node: ast.Import | ast.ImportFrom, guarded: bool) -> None:
    """An import an exported file keeps must work there: no autoloss, and only torch and the standard library
    unless it is optional (inside a `try` that catches ImportError)."""
    at = f"{_where(name)}, line {node.lineno}"
    if isinstance(node, ast.ImportFrom) and node.level:
        raise RuntimeLayoutError(
            f"{at}: relative import; import a sibling as `from {RUNTIME_PACKAGE}.<module> import <names>` "
            "with the imports at the top"
        )
    for module in [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]:
        root = module.split(".")[0]
        if root == "autoloss":
            raise RuntimeLayoutError(
                f"{at}: imports {module}, which an exported file does not have; of autoloss only sibling "
                f"runtime modules, as `from {RUNTIME_PACKAGE}.<module> import <names>` at the top"
            )
        if not guarded and root not in STANDALONE and root not in sys.stdlib_module_names:
            raise RuntimeLayoutError(
                f"{at}: imports {module}, but an exported file needs only {', '.join(sorted(STANDALONE))} "
                "and the standard library; an optional dependency goes in a try/except ImportError"
            )


def _check_code_imports(name: str, node: ast.AST, guarded: bool = False) -> None:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        _check_import(name, node, guarded)
        return
    children = list(ast.iter_child_nodes(node))
    if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
        for child in node.body:
            _check_code_imports(name, child, True)
        children = [*node.handlers, *node.orelse, *node.finalbody]
    for child in children:
        _check_code_imports(name, child, guarded)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_SCOPES += (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def bound_names(nodes: Iterable[ast.AST]) -> set[str]:
    """The names statements bind in their own namespace (not those bound inside functions or classes)."""
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(a.asname or a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        if not isinstance(node, _SCOPES):
            names |= bound_names(ast.iter_child_nodes(node))
    return names


def _import_lines(node: ast.Import | ast.ImportFrom) -> list[str]:
    def alias(a: ast.alias) -> str:
        return f"{a.name} as {a.asname}" if a.asname else a.name

    if isinstance(node, ast.Import):
        return [f"import {alias(a)}" for a in node.names]
    return [f"from {node.module} import {', '.join(alias(a) for a in node.names)}"]


def _sibling(name: str, node: ast.Import | ast.ImportFrom) -> str | None:
    """The runtime module `node` imports names from, or None when it imports something else."""
    prefix = f"{RUNTIME_PACKAGE}."
    if isinstance(node, ast.Import):
        if any(a.name.startswith(prefix) for a in node.names):
            raise RuntimeLayoutError(
                f"{_where(name)}, line {node.lineno}: `import {RUNTIME_PACKAGE}...` has no counterpart in an "
                f"exported file; import names: `from {RUNTIME_PACKAGE}.<module> import <names>`"
            )
        return None
    if node.level or not (node.module or "").startswith(prefix):
        return None
    sibling = node.module[len(prefix) :]
    if "." in sibling or sibling == name:
        raise RuntimeLayoutError(
            f"{_where(name)}, line {node.lineno}: imports from {node.module}, which is not a sibling module"
        )
    for a in node.names:
        if a.name == "*" or a.asname:
            raise RuntimeLayoutError(
                f"{_where(name)}, line {node.lineno}: `{_import_lines(node)[0]}`: in an exported file the "
                "sibling's names are the file's own, so import them by name and without `as`"
            )
    return sibling


def parse_runtime(name: str, text: str) -> RuntimeModule:
    """Split and check the source `text` of runtime module `name`; RuntimeLayoutError (naming the module)
    where an exported file could not carry it unchanged."""
    stmts = ast.parse(text, filename=f"{_where(name)}").body
    i = 1 if stmts and _is_docstring(stmts[0]) else 0
    imports: list[str] = []
    needs: list[str] = []
    takes: list[tuple[str, str]] = []
    imported: set[str] = set()
    while i < len(stmts) and isinstance(stmts[i], (ast.Import, ast.ImportFrom)):
        node = stmts[i]
        sibling = _sibling(name, node)
        if sibling is not None:
            needs += [] if sibling in needs else [sibling]
            takes += [(sibling, a.name) for a in node.names]
        else:
            _check_import(name, node, guarded=False)
            imports += _import_lines(node)
            if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                imported |= bound_names([node])
        i += 1
    # The exported file starts with it, so the module is only tested as exported if it has it too.
    if "from __future__ import annotations" not in imports:
        raise RuntimeLayoutError(f"{_where(name)} lacks `from __future__ import annotations`")
    code = stmts[i:]
    if not code:
        raise RuntimeLayoutError(f"{_where(name)} has no code after its imports")
    for node in code:
        _check_code_imports(name, node)
    lines = text.splitlines(keepends=True)
    end = (stmts[i - 1].end_lineno or 0) if i else 0
    return RuntimeModule(
        name=name,
        header="".join(lines[:end]),
        body="".join(lines[end:]).strip("\n") + "\n",
        imports=tuple(imports),
        needs=tuple(needs),
        takes=tuple(takes),
        imported=frozenset(imported),
        defines=frozenset(bound_names(code)),
    )


def load_runtime(name: str) -> RuntimeModule:
    """Runtime module `name`, read (not imported: generating code needs no torch) and parsed."""
    file = resources.files(RUNTIME_PACKAGE) / f"{name}.py"
    if not file.is_file():
        raise RuntimeLayoutError(f"there is no {_where(name)}")
    return parse_runtime(name, file.read_text(encoding="utf-8"))


def runtime_modules(
    roots: Iterable[str], taken: Iterable[str] = (), load: Callable[[str], RuntimeModule] = load_runtime
) -> list[RuntimeModule]:
    """`roots` and the runtime modules they import from, each after the ones it imports from: the order an
    exported file holds them in. Each name imported from a sibling must be one the sibling defines, and no
    name may be defined twice in the file (`taken`: the names its other parts define)."""
    order: dict[str, RuntimeModule] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in path:
            raise RuntimeLayoutError(f"runtime modules import each other: {' -> '.join([*path, name])}")
        path.append(name)
        module = load(name)
        for dep in module.needs:
            visit(dep)
        order[name] = module
        path.pop()

    for root in roots:
        visit(root)
    owner = dict.fromkeys(taken, "the generated code")
    imported = set().union(*(m.imported for m in order.values()))
    for module in order.values():
        for sibling, name in module.takes:
            if name not in order[sibling].defines:
                raise RuntimeLayoutError(
                    f"{_where(module.name)} imports {name}, which {sibling} does not define"
                )
        for name in sorted(module.defines):
            if name in owner or name in imported:
                other = owner.get(name, "an import of the runtime modules")
                raise RuntimeLayoutError(
                    f"{_where(module.name)} defines {name}, as {other} does: an exported file is one "
                    "namespace"
                )
            owner[name] = _where(module.name)
    return list(order.values())


def runtime_source(roots: Iterable[str], taken: Iterable[str] = ()) -> tuple[list[str], str]:
    """(import lines, code) of the runtime modules `roots` need, as an exported file holds them."""
    modules = runtime_modules(roots, taken)
    return [line for m in modules for line in m.imports], "\n\n".join(m.body for m in modules)


def merge_imports(lines: list[str]) -> list[str]:
    """Import lines deduplicated, `from m import a` and `from m import b` merged, stdlib before torch."""
    plain: set[str] = set()
    names: dict[str, set[str]] = {}
    for line in lines:
        m = re.match(r"from (\S+) import (.+)", line)
        if m:
            names.setdefault(m.group(1), set()).update(n.strip() for n in m.group(2).split(","))
        elif line.startswith("import "):
            plain.add(line)
    entries = [(line.split()[1], line) for line in plain]
    entries += [(mod, f"from {mod} import {', '.join(sorted(ns))}") for mod, ns in names.items()]

    def group(module: str) -> int:
        top = module.split(".")[0]
        return 0 if top == "__future__" else 1 if top in sys.stdlib_module_names else 2

    out: list[str] = []
    last = None
    for module, line in sorted(entries, key=lambda e: (group(e[0]), e[1].startswith("from "), e[0])):
        if last is not None and group(module) != last:
            out.append("")  # a blank line between __future__, standard library and third-party imports
        out.append(line)
        last = group(module)
    return out


def function_names(role: str) -> tuple[str, str]:
    """(public unreduced function, raw generated function) names for a role ("cls" or "reg")."""
    return f"{role}_loss", f"_{role}_loss_expr"


def loss_function_source(role: str, loss: Loss) -> str:
    """The generated expression function plus the public unreduced function with broadcasting."""
    public, raw = function_names(role)
    br = lookup_branch(loss.branch)
    inputs = br.inputs
    raw_src = generate_source(loss.expr, inputs, raw)
    params = ", ".join([inputs[0], *(f"{n}=None" for n in inputs[1:])]) if role == "cls" else None
    if role == "cls":
        shape = "X.shape" if br.output_kind == br.input_kind else "X.shape[:1]"
        body = f"    args = class_inputs({', '.join(inputs)})\n    return fit({raw}(*args), tuple({shape}))\n"
    else:
        params = ", ".join(f"{n}=None" for n in inputs)
        body = (
            f"    args = row_inputs({', '.join(inputs)})\n"
            f"    return fit({raw}(*args), tuple(args[0].shape[:1]))\n"
        )
    doc = (
        f"Unreduced {loss.branch} loss {OUTPUT_DOCS[loss.branch]}: {loss.infix()}\n\n"
        + "\n".join(f"{n}: {INPUT_DOCS[loss.branch][n]}" for n in inputs)
        + "\nInputs the expression does not read may be None."
    )
    return f"{raw_src}\n\ndef {public}({params}):\n{docstring(doc, 4)}{body}"


def docstring(text: str, indent: int) -> str:
    """`text` as an indented docstring literal; raw when it holds backslashes (LaTeX) and a raw string can."""
    pad = " " * indent
    prefix = ""
    if "\\" in text:
        if '"""' in text or text.endswith("\\"):
            text = text.replace("\\", "\\\\")
        else:
            prefix = "r"
    text = text.replace('"""', '\\"\\"\\"')
    lines = text.rstrip("\n").split("\n")
    body = "\n".join([lines[0], *((pad + line) if line else "" for line in lines[1:])])
    closing = f"\n{pad}" if len(lines) > 1 else ""
    return f'{pad}{prefix}"""{body}{closing}"""\n'


def default_comment(role: str, branch_name: str) -> str:
    default = DEFAULTS.get(branch_name, "default")
    return (
        f"# {role} ({branch_name}): the detector's default loss ({default}) won the search, so there is\n"
        f"# nothing to export for this branch: keep your detector's default {role} loss.\n"
    )


def class_doc(loss: Loss, origin: str, call: str, extra: str = "") -> str:
    """Docstring of a generated loss class: where it came from, formula, LaTeX, inputs, output, usage."""
    br = loss.branch
    lines = [
        f"{loss.name or 'Searched'} {br} loss, exported by autoloss ({origin}).",
        "",
        f"Formula: {loss.infix()}",
        f"LaTeX: {loss.latex()}",
        f"Expression: {loss.text}",
        "",
        f"Call: {call}",
        f"Raw inputs (forward_raw / {function_names('cls' if br != 'reg' else 'reg')[0]}):",
        *(f"    {n}: {doc}" for n, doc in INPUT_DOCS[br].items()),
        f"Unreduced value: {OUTPUT_DOCS[br]}.",
        *(textwrap.wrap(extra, WRAP) if extra else []),
        *textwrap.wrap(
            'Then `weight` multiplies each value, `reduction` ("none" | "mean" | "sum"; "mean" divides by '
            "`avg_factor` when given) reduces, and `loss_weight` scales the result.",
            WRAP,
        ),
    ]
    return "\n".join(lines) + "\n"
