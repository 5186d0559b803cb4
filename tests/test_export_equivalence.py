"""Exported PyTorch code computes exactly what autoloss compiles: the same values and the same gradients, for
every named loss and for random trees of every branch, in a Python process where autoloss cannot be imported
(only the exported files' folder and site-packages, no .pth files, so not the editable install either).

The exported convenience forwards (logits + labels, boxes) are also checked against the detector seam's own
input construction (`autoloss.detection.loss_inputs`), alpha_t included.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from autoloss.export import export
from autoloss.loss import Loss
from autoloss.spaces import BRANCHES, NAMED
from autoloss.spaces.generate import TreeLimits, ramped_half_and_half

N, K = 16, 5
RANDOM_PER_BRANCH = 12


def _cases() -> list[Loss]:
    cases = [Loss.named(name) for name in NAMED]
    for i, br in enumerate(BRANCHES.values()):
        trees = ramped_half_and_half(br, random.Random(100 + i), RANDOM_PER_BRANCH, TreeLimits(max_depth=5))
        cases += [Loss(tree, br.name) for tree in trees]
    return cases


def _random_boxes(g: torch.Generator, n: int) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 60 + 1
    return torch.cat([xy, xy + wh], dim=1)


def _raw_inputs(branch: str, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Float64 raw inputs, so that any difference in the generated code would show beyond rounding."""
    if branch == "reg":
        from autoloss.detection.loss_inputs import reg_inputs

        pred = _random_boxes(g, N)
        target = pred + torch.randn(N, 4, generator=g) * 10
        return {k: v.double() for k, v in reg_inputs(pred, target).items()}
    x = torch.randn(N, K, generator=g, dtype=torch.float64) * 3
    onehot = torch.nn.functional.one_hot(torch.randint(0, K, (N,), generator=g), K).double()
    iou = torch.rand(N, generator=g, dtype=torch.float64)
    if branch == "cls-softmax":
        return {"X": x, "Y": onehot, "Z": iou[:, None].expand(N, K).clone()}
    onehot[: N // 4] = 0  # some negatives
    return {"X": x, "Q": onehot * iou[:, None], "PY": onehot, "NY": 1 - onehot}


# Runs in the clean process: imports each exported file, evaluates its raw function with gradients, and the
# named losses' modules through their convenience forwards.
CHILD = r"""
import importlib, importlib.util, sys
import torch
assert importlib.util.find_spec("autoloss") is None, "autoloss must not be importable here"
data = torch.load("cases.pt")
out = []
for i, case in enumerate(data["cases"]):
    mod = importlib.import_module(f"loss_{i}")
    fn = mod.reg_loss if case["branch"] == "reg" else mod.cls_loss
    leaves = {k: v.clone().requires_grad_(True) for k, v in case["inputs"].items()}
    value = fn(**leaves)
    grads = [None] * len(leaves)  # a constant expression has no gradient path at all
    if value.requires_grad:
        grads = torch.autograd.grad(value, list(leaves.values()), case["cotangent"], allow_unused=True)
    out.append({"value": value.detach(), "grads": list(grads)})
modules = []
for i, case in enumerate(data["cases"]):
    if "module" not in case:
        continue
    mod = importlib.import_module(f"loss_{i}")
    cls = mod.SearchedRegLoss if case["branch"] == "reg" else mod.SearchedClsLoss
    m = case["module"]
    if case["branch"] == "reg":
        pred = m["pred"].clone().requires_grad_(True)
        value = cls(reduction="sum", loss_weight=2.0)(pred, m["target"])
        leaf = pred
    else:
        logits = m["logits"].clone().requires_grad_(True)
        value = cls(reduction="sum", loss_weight=2.0)(logits, m["labels"], iou=m["iou"])
        leaf = logits
    (grad,) = torch.autograd.grad(value, [leaf])
    modules.append({"index": i, "value": value.detach(), "grad": grad})
torch.save({"raw": out, "modules": modules, "path": sys.path}, "result.pt")
"""


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _module_case(loss: Loss, g: torch.Generator) -> dict[str, torch.Tensor]:
    pred = _random_boxes(g, N)
    target = pred + torch.randn(N, 4, generator=g) * 10
    if loss.branch == "reg":
        return {"pred": pred, "target": target}
    if loss.branch == "cls-sigmoid":
        labels = torch.randint(-1, K, (N,), generator=g)  # -1: negative
        return {"logits": torch.randn(N, K, generator=g), "labels": labels, "iou": torch.rand(N, generator=g)}
    labels = torch.randint(0, K, (N,), generator=g)  # 0: background (torchvision's convention)
    return {"logits": torch.randn(N, K, generator=g), "labels": labels, "iou": torch.rand(N, generator=g)}


def _seam_value(loss: Loss, m: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """What the detector seam computes for the same batch: sum of (alpha_t *) values, times 2."""
    from autoloss.detection import loss_inputs as li

    if loss.branch == "reg":
        pred = m["pred"].clone().requires_grad_(True)
        value = li.apply_loss(loss, li.reg_inputs(pred, m["target"]), (N,)).sum()
        leaf = pred
    elif loss.branch == "cls-sigmoid":
        leaf = m["logits"].clone().requires_grad_(True)
        onehot = torch.zeros(N, K)
        pos = m["labels"] >= 0
        onehot[pos, m["labels"][pos]] = 1.0
        iou = torch.where(pos, m["iou"], torch.zeros_like(m["iou"]))
        values = li.apply_loss(loss, li.sigmoid_cls_inputs(leaf, onehot, iou), (N, K))
        value = (li.alpha_t(onehot) * values).sum()
    else:
        leaf = m["logits"].clone().requires_grad_(True)
        value = li.apply_loss(loss, li.softmax_cls_inputs(leaf, m["labels"], m["iou"]), (N,)).sum()
    value = 2.0 * value
    (grad,) = torch.autograd.grad(value, [leaf])
    return value.detach(), grad


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export every case, run them all in one clean process, return (cases, payload, result)."""
    folder = tmp_path_factory.mktemp("exported")
    g = torch.Generator().manual_seed(0)
    cases = _cases()
    payload = []
    for i, loss in enumerate(cases):
        (folder / f"loss_{i}.py").write_text(export(loss, "torch"), encoding="utf-8")
        inputs = _raw_inputs(loss.branch, g)
        shape = (N, K) if loss.branch == "cls-sigmoid" else (N,)
        case = {
            "branch": loss.branch,
            "inputs": inputs,
            "cotangent": torch.randn(shape, generator=g).double(),
        }
        if loss.name:
            case["module"] = _module_case(loss, g)
        payload.append(case)
    torch.save({"cases": payload}, folder / "cases.pt")
    proc = subprocess.run(
        [sys.executable, "-S", "-c", CHILD],
        cwd=folder,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cases, payload, torch.load(folder / "result.pt"), folder


def test_child_process_sees_only_the_export_folder_and_site_packages(exported):
    *_, result, folder = exported
    src = str(Path(__file__).resolve().parents[1] / "src")
    assert src not in result["path"]
    assert "" in result["path"] or str(folder) in result["path"]  # cwd: the exported files' folder


def test_exported_values_and_gradients_equal_compiled(exported):
    cases, payload, result, _ = exported
    assert len(result["raw"]) == len(cases)
    for loss, case, got in zip(cases, payload, result["raw"], strict=True):
        leaves = {k: v.clone().requires_grad_(True) for k, v in case["inputs"].items()}
        value = loss(**leaves)
        grads = [None] * len(leaves)
        if value.requires_grad:
            grads = torch.autograd.grad(value, list(leaves.values()), case["cotangent"], allow_unused=True)
        torch.testing.assert_close(
            got["value"], value.detach(), rtol=0, atol=0, equal_nan=True, msg=loss.text
        )
        for name, mine, theirs in zip(leaves, grads, got["grads"], strict=True):
            if mine is None or theirs is None:
                # An input the expression ignores: no gradient path in one, or an exact zero in the other.
                other = theirs if mine is None else mine
                assert other is None or not other.any(), f"{loss.text}: d/d{name}"
                continue
            torch.testing.assert_close(
                theirs, mine, rtol=0, atol=0, equal_nan=True, msg=f"{loss.text} d/d{name}"
            )


def test_random_trees_cover_the_helper_operators(exported):
    # The random trees must exercise the registry helpers (Serf, Salf, Sgdf, Dot, guards), or the
    # equality above would prove little about them.
    cases = exported[0]
    used = set().union(*(loss.expr.ops_used for loss in cases))
    assert {"Serf", "Sgdf", "Dot", "Div", "Log", "Softmax"} <= used


def test_exported_modules_equal_the_detector_seam(exported):
    cases, payload, result, _ = exported
    assert len(result["modules"]) == len(NAMED)
    for got in result["modules"]:
        loss = cases[got["index"]]
        value, grad = _seam_value(loss, payload[got["index"]]["module"])
        torch.testing.assert_close(got["value"], value, rtol=1e-6, atol=1e-6, msg=loss.text)
        torch.testing.assert_close(got["grad"], grad, rtol=1e-5, atol=1e-6, msg=loss.text)
