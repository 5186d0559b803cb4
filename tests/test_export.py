"""`autoloss export` and `autoloss.export.export`: every format round-trips, the generated Python runs
(the MMDetection module without MMDetection), and bad targets are one line with exit code 2."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from autoloss.cli import cli
from autoloss.errors import AutolossError
from autoloss.export import FORMATS, ExportError, export, from_run_dir
from autoloss.loss import Loss
from autoloss.spaces import NAMED

FOUND_CLS = "Neg(Add(Mul(PY,Log(Sig(X))),Mul(NY,Log(Sub(1,Sig(X))))))"


def make_run(path: Path, detector: str = "fcos", cls: str | None = FOUND_CLS, reg: str | None = None) -> Path:
    """A minimal finished run directory: config.yaml and best/{cls,reg}.json as the search writes them."""
    (path / "best").mkdir(parents=True)
    (path / "config.yaml").write_text(f"proxy:\n  detector: {detector}\nversion: 1\n", encoding="utf-8")
    cls_branch = "cls-softmax" if detector == "faster_rcnn" else "cls-sigmoid"
    for role, text, branch in (("cls", cls, cls_branch), ("reg", reg, "reg")):
        payload = (
            Loss.resolve(text, branch).to_json()
            if text
            else {"branch": branch, "expr": None, "text": "default"}
        )
        (path / "best" / f"{role}.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return path


def load(text: str, name: str, tmp_path: Path) -> types.ModuleType:
    """Import generated source as a module from a file (as a user would)."""
    file = tmp_path / f"{name}.py"
    file.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- JSON and LaTeX ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(NAMED))
def test_json_of_a_loss_reads_back_equal(name):
    loss = Loss.named(name)
    assert Loss.from_json(export(loss.text, "json", branch=loss.branch)) == loss
    assert Loss.from_json(export(name, "json")) == loss


def test_json_of_a_run_has_both_branches_and_the_default(tmp_path):
    run = make_run(tmp_path / "run")
    data = json.loads(export(str(run), "json"))
    assert data["detector"] == "fcos"
    assert Loss.from_json(data["cls"]) == Loss.parse(FOUND_CLS, "cls-sigmoid")
    assert data["reg"] == {"branch": "reg", "expr": None, "text": "default"}


def test_latex_has_one_equation_per_found_loss(tmp_path):
    run = make_run(tmp_path / "run", reg="cse-a-reg")
    text = export(str(run), "latex")
    assert text.count("\\begin{equation}") == 2
    assert Loss.named("cse-a-reg").latex() in text
    assert "% Neg(Add(Mul(PY," in text
    only_cls = export(str(make_run(tmp_path / "run2")), "latex")
    assert only_cls.count("\\begin{equation}") == 1
    assert "default loss (giou) won" in only_cls


# --- torch -----------------------------------------------------------------------------------------


def test_torch_export_of_a_run_skips_the_default_branch(tmp_path):
    text = export(str(make_run(tmp_path / "run")), "torch")
    compile(text, "exported.py", "exec")
    assert "the detector's default loss (giou) won the search" in text
    module = load(text, "run_losses", tmp_path)
    assert hasattr(module, "SearchedClsLoss") and not hasattr(module, "SearchedRegLoss")
    doc = module.SearchedClsLoss.__doc__
    for part in ("Formula:", "LaTeX:", "Expression: " + FOUND_CLS, "reduction", "loss_weight", "[N, K]"):
        assert part in doc
    assert module.SearchedClsLoss.expression == FOUND_CLS


def test_torch_export_of_both_losses_and_their_convenience_calls(tmp_path):
    module = load(export(str(make_run(tmp_path / "run", reg="giou")), "torch"), "both", tmp_path)
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 25.0]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    per_box = module.SearchedRegLoss(reduction="none")(pred, target)
    # box 0 is exact (GIoU loss 0); box 1: I = 25, U = 275, E = 375 -> 1 - 25/275 + 100/375
    torch.testing.assert_close(per_box, torch.tensor([0.0, 1 - 25 / 275 + 100 / 375]), atol=1e-6, rtol=1e-6)
    mean = module.SearchedRegLoss(loss_weight=10.0)(pred, target)
    torch.testing.assert_close(mean, 10.0 * per_box.mean())
    mean.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 2, -1, 3])  # -1 and 3 (= K) are negatives
    value = module.SearchedClsLoss(reduction="sum")(logits, labels)
    raw = module.SearchedClsLoss(reduction="sum").forward_raw(**module.sigmoid_cls_inputs(logits, labels))
    torch.testing.assert_close(value, raw)


def test_torch_modules_check_their_arguments(tmp_path):
    module = load(export("cse-b-cls", "torch"), "cse_b_cls", tmp_path)
    with pytest.raises(ValueError, match="reduction must be one of"):
        module.SearchedClsLoss(reduction="avg")
    with pytest.raises(ValueError, match="reads Q"):
        module.SearchedClsLoss()(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="unknown inputs"):
        module.SearchedClsLoss().unreduced(X=torch.randn(2, 3), Y=torch.randn(2, 3))


def test_empty_batch_gives_zero_with_a_gradient_path(tmp_path):
    module = load(export("cse-a-reg", "torch"), "cse_a_reg", tmp_path)
    pred = torch.zeros(0, 4, requires_grad=True)
    value = module.SearchedRegLoss()(pred, torch.zeros(0, 4))
    assert value.item() == 0.0
    value.backward()
    assert pred.grad is not None


def test_prefix_names_the_classes(tmp_path):
    module = load(export("ce", "torch", prefix="Mine"), "mine", tmp_path)
    assert hasattr(module, "MineClsLoss")
    with pytest.raises(ExportError, match="identifier"):
        export("ce", "torch", prefix="not valid")


def test_export_package_does_not_import_torch():
    # Generating code (even the torch and mmdet formats) needs no torch: only the generated file does.
    code = (
        "import sys; from autoloss.export import export; "
        "[export('cse-b-cls', f) for f in ('torch', 'mmdet', 'json')]; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- runtime helpers agree with the detector seam ----------------------------------------------


def test_runtime_inputs_equal_the_detector_seam():
    from autoloss.detection import loss_inputs as li
    from autoloss.export.runtime import common

    g = torch.Generator().manual_seed(1)
    pred = torch.rand(8, 4, generator=g) * 50
    pred[:, 2:] += pred[:, :2]
    target = pred + torch.randn(8, 4, generator=g) * 5
    for k, v in li.reg_inputs(pred, target).items():
        torch.testing.assert_close(common.reg_inputs(pred, target)[k], v, rtol=0, atol=0)
    torch.testing.assert_close(common.box_iou(pred, target), li.paired_iou(pred, target), rtol=0, atol=0)
    assert common.BOX_EPS == li.BOX_EPS and common.FOCAL_ALPHA == li.FOCAL_ALPHA


def test_reg_weights_agree_with_the_detectors():
    from autoloss.detection import detectors
    from autoloss.export.source import ONE_STAGE, REG_WEIGHTS, TWO_STAGE

    assert set(REG_WEIGHTS) == set(detectors.DETECTORS) == set(ONE_STAGE) | set(TWO_STAGE)
    # the weight a built detector gives a searched reg loss is the one the export writes
    for name in detectors.DETECTORS:
        built = detectors.build_detector(name, 2, reg_loss="giou", seed=0)
        head = built.model.roi_heads if name == "faster_rcnn" else built.model.head
        assert head.reg_weight == REG_WEIGHTS[name]


def test_reduce_loss_semantics():
    from autoloss.export.runtime.common import reduce_loss

    values = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert reduce_loss(values, reduction="sum").item() == 10.0
    assert reduce_loss(values).item() == 2.5
    assert reduce_loss(values, avg_factor=4.0).item() == pytest.approx(2.5)
    # a per-row weight spreads over the class axis (never averaged into one number)
    weighted = reduce_loss(values, torch.tensor([1.0, 0.0]), reduction="none")
    torch.testing.assert_close(weighted, torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    assert reduce_loss(torch.zeros(0, 2)).item() == 0.0
    with pytest.raises(ValueError, match="weight shape"):
        reduce_loss(values, torch.ones(3))
    with pytest.raises(ValueError, match="avg_factor"):
        reduce_loss(values, reduction="sum", avg_factor=2.0)


# --- MMDetection -------------------------------------------------------------------------------------


def test_mmdet_module_imports_and_computes_without_mmdetection(tmp_path, monkeypatch):
    # Hidden even where it is installed (CI installs it for the conformance tests): `import mmdet` fails.
    monkeypatch.setitem(sys.modules, "mmdet", None)
    monkeypatch.setitem(sys.modules, "mmdet.registry", None)
    run = make_run(tmp_path / "run", reg="cse-a-reg")
    text = export(str(run), "mmdet")
    assert "@MODELS.register_module()" in text
    assert "# custom_imports = dict(imports=['autoloss_losses']" in text
    assert "loss_cls=dict(type='SearchedClsLoss', use_sigmoid=True" in text
    assert "loss_bbox=dict(type='SearchedRegLoss', loss_weight=1.0)" in text
    mm = load(text, "mm_losses", tmp_path)
    plain = load(export(str(run), "torch"), "plain_losses", tmp_path)
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, 3, 3, 1])  # 3 = num_classes: background, as MMDetection writes it
    weight = torch.tensor([1.0, 1.0, 0.5, 1.0, 1.0, 0.0])
    got = mm.SearchedClsLoss(loss_weight=2.0)(logits, labels, weight=weight, avg_factor=4.0)
    want = plain.SearchedClsLoss(loss_weight=2.0)(logits, labels, weight=weight, avg_factor=4.0)
    torch.testing.assert_close(got, want)
    per_element = mm.SearchedClsLoss()(logits, labels, reduction_override="none")
    assert per_element.shape == (6, 3)
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 2.0, 12.0, 8.0]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    reg = mm.SearchedRegLoss(loss_weight=10.0)
    torch.testing.assert_close(reg(pred, target), plain.SearchedRegLoss(loss_weight=10.0)(pred, target))
    # [N, 4] per-coordinate weights become one per box; all-zero weights give a connected zero
    torch.testing.assert_close(
        reg(pred, target, weight=torch.ones(2, 4) * 0.5), reg(pred, target, weight=torch.full((2,), 0.5))
    )
    zero = reg(pred, target, weight=torch.zeros(2))
    assert zero.item() == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match="reduction_override"):
        reg(pred, target, reduction_override="avg")


def test_mmdet_softmax_cls_takes_labels_and_iou(tmp_path):
    mm = load(export("cse-a-cls", "mmdet"), "mm_cse_a", tmp_path)
    plain = load(export("cse-a-cls", "torch"), "plain_cse_a", tmp_path)
    logits = torch.randn(5, 4)
    iou = torch.rand(5)
    mm_labels = torch.tensor([0, 1, 2, 3, 3])  # 3 = num_classes: background in MMDetection
    tv_labels = torch.tensor([1, 2, 3, 0, 0])  # the same classes in torchvision's order (0 = background)
    tv_logits = torch.cat([logits[:, 3:], logits[:, :3]], dim=1)
    got = mm.SearchedClsLoss()(logits, (mm_labels, iou), reduction_override="none")
    want = plain.SearchedClsLoss(reduction="none")(tv_logits, tv_labels, iou=iou)
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="reads Z"):
        mm.SearchedClsLoss()(logits, mm_labels)
    with pytest.raises(ValueError, match="use_sigmoid=False"):
        mm.SearchedClsLoss(use_sigmoid=True)
    text = export("cse-a-cls", "mmdet")
    assert "roi_head=dict(" in text and "GFLHead" in text


def test_mmdet_classes_register_when_mmdetection_is_there(tmp_path, monkeypatch):
    registered = []

    class Registry:
        def register_module(self, name=None, force=False, module=None):
            def deco(cls):
                registered.append(cls.__name__)
                return cls

            return deco

    fake = types.ModuleType("mmdet")
    fake_registry = types.ModuleType("mmdet.registry")
    fake_registry.MODELS = Registry()
    monkeypatch.setitem(sys.modules, "mmdet", fake)
    monkeypatch.setitem(sys.modules, "mmdet.registry", fake_registry)
    load(export(str(make_run(tmp_path / "run", reg="giou")), "mmdet"), "registered", tmp_path)
    assert registered == ["SearchedClsLoss", "SearchedRegLoss"]


def test_two_stage_run_snippet_uses_the_roi_head_and_weight_10(tmp_path):
    run = make_run(tmp_path / "run", detector="faster_rcnn", cls="cse-a-cls", reg="cse-a-reg")
    text = export(str(run), "mmdet")
    assert "roi_head=dict(" in text and "reg_decoded_bbox=True" in text
    assert "loss_bbox=dict(type='SearchedRegLoss', loss_weight=10.0)" in text
    assert "bbox_head=dict(  # one-stage" not in text


# --- sources and errors ----------------------------------------------------------------------------


def test_from_run_dir_reads_the_sample_layout(tmp_path):
    src = from_run_dir(make_run(tmp_path / "run"))
    assert [f.role for f in src.found] == ["cls", "reg"]
    assert src.found[1].loss is None and src.detector == "fcos"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "'nope' is not a run directory, a named loss"),
        (["Add(X"], "unbalanced parentheses"),
        (["Foo(X)"], "unknown operator"),
        (["runs/missing"], "run directory runs/missing does not exist"),
        (["cse-a-reg", "--branch", "cls-softmax"], "is a reg loss"),
    ],
)
def test_bad_targets_are_one_line_and_exit_2(args, message):
    r = CliRunner().invoke(cli, ["export", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_run_dir_without_best_or_config(tmp_path):
    runner = CliRunner()
    (tmp_path / "a").mkdir()
    r = runner.invoke(cli, ["export", str(tmp_path / "a")])
    assert r.exit_code == 2 and "not an autoloss run directory" in r.output
    (tmp_path / "a" / "config.yaml").write_text("version: 1\n")
    r = runner.invoke(cli, ["export", str(tmp_path / "a")])
    assert r.exit_code == 2 and "has no best/ folder" in r.output
    r = runner.invoke(cli, ["export", str(make_run(tmp_path / "b")), "--branch", "reg"])
    assert r.exit_code == 2 and "--branch applies to an expression" in r.output
    with pytest.raises(AutolossError, match="unknown export format"):
        export("ce", "onnx")


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_writes_every_format_to_stdout_or_a_file(fmt, tmp_path):
    runner = CliRunner()
    run = make_run(tmp_path / "run", reg="giou")
    r = runner.invoke(cli, ["export", str(run), "--format", fmt])
    assert r.exit_code == 0, r.output
    assert r.output == export(str(run), fmt)
    out = tmp_path / "out" / f"my_losses.{'py' if fmt in ('torch', 'mmdet') else fmt}"
    r = runner.invoke(cli, ["export", str(run), "--format", fmt, "--out", str(out)])
    assert r.exit_code == 0, r.output
    written = out.read_text(encoding="utf-8")
    if fmt == "mmdet":
        assert "imports=['my_losses']" in written  # the snippet imports the file by its own name
    else:
        assert written == export(str(run), fmt)
