"""The final verdict: what won the search, said plainly, from hand-built tables."""

from __future__ import annotations

from autoloss.evolution.final import found_kind, verdict
from autoloss.spaces.named import NAMED
from autoloss.stats import paired_comparison

BCE, IOU = NAMED["bce"].text, NAMED["iou"].text
NEW = "Sub(1,Div(Mul(2,I),E))"


def _row(cls_, reg_, aps):
    return {"cls": cls_, "reg": reg_, "ap": aps}


def test_found_kind_tells_default_named_and_new_apart():
    assert found_kind(("default", "default")) == "default"
    assert found_kind((BCE, "default")) == "named"
    assert found_kind((BCE, IOU)) == "named"
    assert found_kind((BCE, NEW)) == "new"


def test_verdicts_say_who_won_and_whether_it_beats_the_best_named_loss():
    default = _row("default", "default", [0.10, 0.11, 0.12])
    assert "default losses won" in verdict({"default": default, "found": default}, "default")

    named = _row(BCE, "default", [0.12, 0.13, 0.14])
    named["vs_default"] = paired_comparison(named["ap"], default["ap"])
    text = verdict({"default": default, "found": named}, "named")
    assert text.startswith("A named loss won the search at the top rung (bce)") and "better" in text

    found = _row(BCE, NEW, [0.15, 0.16, 0.175])
    found["vs_default"] = paired_comparison(found["ap"], default["ap"])
    found["vs_best_named"] = paired_comparison(found["ap"], named["ap"])
    text = verdict({"default": default, "best named": named, "found": found}, "new")
    assert "beat the best named loss (bce)" in text and "[95 % CI" in text

    close = _row(BCE, NEW, [0.125, 0.125, 0.145])
    close["vs_default"] = paired_comparison(close["ap"], default["ap"])
    close["vs_best_named"] = paired_comparison(close["ap"], named["ap"])
    text = verdict({"default": default, "best named": named, "found": close}, "new")
    assert "do not beat the best named loss (bce) beyond the seed noise" in text
