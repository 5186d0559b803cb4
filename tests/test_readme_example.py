"""The README's code runs as written. Blocks under a `<!-- readme-test: NAME ... -->` marker are extracted
from README.md and run in a fresh Python process:

- `api`: the Python API example (a tiny search included);
- `exported-torch`: using a `--format torch` export, next to a file exported from a run directory;
- `add-op`: the "adding an operator" recipe, added to a copy of the package's ops.py (plus the
  `_REG_OPS` edit the text asks for), then checked end to end: parse, compile, print, random trees, the
  filters, `autoloss ops` and the exported code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autoloss.export import export
from autoloss.loss import Loss

ROOT = Path(__file__).resolve().parents[1]


def readme_block(name: str) -> str:
    """The first ```python block after the `<!-- readme-test: name` marker."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = text.find(f"<!-- readme-test: {name}")
    assert marker >= 0, f"README.md has no block marked readme-test: {name}"
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, marker)
    assert match is not None, f"no python block after the readme-test: {name} marker"
    return match.group(1)


def run_python(code: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.mark.slow
def test_api_example_runs(tmp_path):
    out = run_python(readme_block("api"), tmp_path)
    assert "1 - I / U" in out
    assert (tmp_path / "runs" / "api-demo" / "best" / "reg.json").is_file()
    assert "classification" in out and "bbox_regression" in out


def test_exported_torch_example_runs(tmp_path):
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "config.yaml").write_text("task:\n  settings: {detector: fcos}\n", encoding="utf-8")
    for role, name in (("cls", "cse-b-cls"), ("reg", "cse-b-reg")):
        (run / "best" / f"{role}.json").write_text(json.dumps(Loss.named(name).to_json()), encoding="utf-8")
    (tmp_path / "found_losses.py").write_text(export(str(run), "torch"), encoding="utf-8")
    out = run_python(readme_block("exported-torch"), tmp_path)
    assert "tensor(" in out


ADD_OP_CHECK = r"""
import json, random, subprocess, sys
import torch
import autoloss
from autoloss import Loss
from autoloss.ops import OPS
from autoloss.spaces import BRANCHES
from autoloss.spaces.generate import ramped_half_and_half
from autoloss.export import export

assert autoloss.__file__.startswith(sys.argv[1]), autoloss.__file__  # the patched copy, not the checkout
assert "Atan" in OPS
assert all("Atan" in b.ops for b in BRANCHES.values()), "Atan should be allowed in every branch"

loss = Loss.parse("Sub(1,Atan(Div(I,U)))", branch="reg")
i, u = torch.tensor([1.0, 4.0]), torch.tensor([4.0, 5.0])
torch.testing.assert_close(loss(I=i, U=u, E=u + 1), 1 - torch.atan(i / (u + 1e-20)))
assert "atan(I / U)" in loss.infix() and "atan" in loss.latex()
cls = Loss.parse("Neg(Dot(Y,Log(Softmax(Atan(X)))))", branch="cls-softmax")
assert cls(X=torch.randn(3, 4), Y=torch.eye(4)[:3], Z=torch.ones(3)).shape == (3,)

trees = ramped_half_and_half(BRANCHES["reg"], random.Random(0), 300)
assert any("Atan" in t.ops_used for t in trees), "random trees never use the new operator"

result = autoloss.check(loss, mos=False)
assert result.stage in ("validity", "dedup", "cpv", "passed"), result

namespace = {}
exec(compile(export(loss, "torch"), "exported.py", "exec"), namespace)
torch.testing.assert_close(namespace["reg_loss"](I=i, U=u, E=u + 1), loss(I=i, U=u, E=u + 1))

rows = json.loads(subprocess.run([sys.executable, "-m", "autoloss", "ops", "--json"], capture_output=True,
                                 text=True, check=True).stdout)
atan = next(r for r in rows if r["name"] == "Atan")
assert atan["branches"] == ["cls-softmax", "cls-sigmoid", "reg"], atan
print("ok")
"""


def test_adding_an_operator_recipe_works_as_written(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "autoloss", src / "autoloss", ignore=shutil.ignore_patterns("__pycache__"))
    # Step 1 of the recipe: the README's `_register(Op(...))` call, next to the others in ops.py.
    ops_py = src / "autoloss" / "ops.py"
    ops_text = ops_py.read_text(encoding="utf-8")
    anchor = ops_text.find("# Names the generated code may use")
    block = readme_block("add-op")
    ops_text = (
        ops_text[:anchor] + block + "\n" + ops_text[anchor:] if anchor >= 0 else ops_text + "\n" + block
    )
    ops_py.write_text(ops_text, encoding="utf-8")
    # Step 2: allow it in reg by adding its name to _REG_OPS in spaces/branches.py.
    branches_py = src / "autoloss" / "spaces" / "branches.py"
    text = branches_py.read_text(encoding="utf-8")
    patched, count = re.subn(r'(_REG_OPS = frozenset\(")([^"]*)(")', r"\1\2 Atan\3", text)
    assert count == 1, "the README says to add reg operators to _REG_OPS in spaces/branches.py"
    branches_py.write_text(patched, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(src)}
    assert run_python(ADD_OP_CHECK.replace("sys.argv[1]", repr(str(src))), tmp_path, env).strip() == "ok"


def test_config_file_example_loads_and_names_a_coco_search(tmp_path, monkeypatch):
    from autoloss.evolution.config import SearchConfig, load_config_file, resolve_task

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = text.find("<!-- readme-test: config-file")
    assert marker >= 0
    block = re.compile(r"```yaml\n(.*?)```", re.S).search(text, marker)
    assert block is not None
    path = tmp_path / "coco.yaml"
    path.write_text(block.group(1), encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # the example's COCO layout, as files that exist
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    for name in ("train2017", "val2017"):
        (tmp_path / "coco" / name).mkdir()
        (tmp_path / "coco" / "annotations" / f"instances_{name}.json").write_text("{}")
    cfg = resolve_task(load_config_file(str(path), SearchConfig()))  # validates, as `search` does
    s = cfg.task.settings
    assert (s["detector"], s["backbone"], cfg.task.device) == ("retinanet", "resnet50", "cuda")
    assert s["val_data"].endswith("instances_val2017.json") and cfg.evolution.top_k == 8
    assert cfg.task.iterations == 2000  # the preset's schedule
