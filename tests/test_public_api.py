"""The stable public API: `autoloss.Loss`, `autoloss.check`, `autoloss.search`,
`autoloss.detection.build_detector`, `autoloss.export.export` — importable as documented, light to import,
and `autoloss.search` a plain function in any import order (its machinery is the `autoloss.evolution`
package, so no import can replace it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import autoloss
from autoloss import ExprError, Loss


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_public_names():
    assert set(autoloss.__all__) == {
        "AutolossError",
        "ExprError",
        "Loss",
        "check",
        "plot_loss_curves",
        "search",
    }
    for name in autoloss.__all__:
        assert getattr(autoloss, name) is not None
    from autoloss.detection import build_detector
    from autoloss.export import export

    assert callable(build_detector) and callable(export)


def test_import_is_light_and_search_is_lazy():
    out = _python(
        "import sys, autoloss; autoloss.search; autoloss.check; autoloss.plot_loss_curves; "
        "print('torch' in sys.modules, 'sympy' in sys.modules, 'autoloss.evolution.api' in sys.modules,"
        " 'matplotlib' in sys.modules)"
    )
    assert out.split() == ["False", "False", "False", "False"]


@pytest.mark.parametrize(
    "first",
    [
        "import autoloss",
        "from autoloss.evolution.config import budget_config",
        "import autoloss.evolution.api as api",
        "from autoloss import search",
    ],
)
def test_search_stays_callable_whatever_is_imported_first(first):
    # Importing a subpackage sets the parent's attribute of its name; none is named `search`.
    out = _python(
        f"{first}\nimport autoloss, autoloss.evolution.driver\n"
        "from autoloss import search\n"
        "import types\n"
        "print(type(autoloss.search) is types.FunctionType, search is autoloss.search,"
        " autoloss.evolution.driver.__name__,"
        " autoloss.evolution.budget_config('smoke').evolution.generations,"
        " type(autoloss) is types.ModuleType)"
    )
    assert out.split() == ["True", "True", "autoloss.evolution.driver", "2", "True"]


def test_search_forwards_to_the_search_api(monkeypatch, tmp_path):
    seen = {}

    def fake(out=None, **kwargs):
        seen.update(out=out, **kwargs)
        return {"ok": True}

    monkeypatch.setattr("autoloss.evolution.api.search", fake)
    result = autoloss.search(tmp_path, budget="smoke", evolution={"generations": 1})
    assert result == {"ok": True}
    assert seen == {
        "out": tmp_path,
        "budget": "smoke",
        "task": None,
        "overwrite": False,
        "progress": None,
        "evolution": {"generations": 1},
    }
    import inspect

    assert list(inspect.signature(autoloss.search).parameters)[:2] == ["out", "budget"]
    assert "budget" in autoloss.search.__doc__


def test_check_accepts_a_loss_a_name_or_text_with_branch():
    passed = autoloss.check(Loss.named("giou"), mos=False)
    assert passed.passed and [v.name for v in passed.verdicts] == ["validity", "dedup", "cpv"]
    assert autoloss.check("giou", mos=False).passed
    rejected = autoloss.check("Sub(U,I)", branch="reg", mos=False)  # raw pixel^2: not scale-free
    assert not rejected.passed and rejected.stage == "cpv" and rejected.reason
    blind = autoloss.check("Neg(Dot(Y,Y))", branch="cls-softmax")  # never reads the logits
    assert not blind.passed and blind.stage == "validity"


def test_check_rejects_bad_input_clearly():
    with pytest.raises(ExprError, match="unknown operator"):
        autoloss.check("Foo(I)", branch="reg")
    with pytest.raises(ExprError, match="is a reg loss, not cls-softmax"):
        autoloss.check(Loss.named("giou"), branch="cls-softmax")
