"""The final verdict: what won the search, said plainly, from hand-built tables."""

from __future__ import annotations

from autoloss.evolution.final import found_kind, verdict
from autoloss.spaces.named import NAMED
from autoloss.stats import paired_comparison

BCE, IOU = NAMED["bce"].text, NAMED["iou"].text
NEW = "Sub(1,Div(Mul(I,I),Mul(U,E)))"


def _row(cls_, reg_, aps):
    return {"cls": cls_, "reg": reg_, "ap": aps}


def test_found_kind_tells_default_named_and_new_apart():
    assert found_kind(("default", "default")) == "default"
    assert found_kind((BCE, "default")) == "named"
    assert found_kind((BCE, IOU)) == "named"
    assert found_kind((BCE, NEW)) == "new"
    # Not new: a rescaling of a named loss trains as it does, and a sum of named parts is named parts.
    assert found_kind((f"Mul(2,{BCE})", "default")) == "rescaled"
    assert found_kind(("default", f"Add({IOU},3)")) == "rescaled"
    assert found_kind(("default", f"Add({IOU},{NAMED['giou'].text})")) == "named"
    assert found_kind((NAMED["ce"].text, "default"), "cls-softmax") == "named"


def test_novelty_names_what_a_found_loss_is():
    from autoloss.evolution.novelty import classify

    assert classify(BCE, "cls-sigmoid").kind == "named"
    assert classify(NAMED["cse-b-cls"].text, "cls-sigmoid").kind == "published"
    rescaled = classify(f"Mul(3,{BCE})", "cls-sigmoid")
    assert rescaled.kind == "rescaled" and rescaled.detail.startswith("a rescaling of bce")
    assert classify(f"Add({IOU},Mul(2,{NAMED['giou'].text}))", "reg").detail == "iou + giou"
    # Softplus(3X) on negatives: a sharper penalty, not parallel to any named loss's gradient
    assert classify("Add(Mul(PY,Softplus(Neg(X))),Mul(NY,Softplus(Mul(3,X))))", "cls-sigmoid").kind == "new"


def test_verdicts_say_who_won_and_whether_it_beats_the_best_named_loss():
    default = _row("default", "default", [0.10, 0.11, 0.12])
    assert "default losses won" in verdict({"default": default, "found": default}, "default")
    nothing = verdict({"default": default, "found": default}, "nothing", n_seeds=2)
    assert nothing.startswith("Nothing trained") and "won" not in nothing
    only_anchors = verdict({"default": default, "found": default}, "default", trained_candidates=0)
    assert only_anchors.startswith("No new candidate finished")
    rescaled = _row(f"Mul(2,{BCE})", "default", [0.12, 0.13, 0.14])
    rescaled["vs_default"] = paired_comparison(rescaled["ap"], default["ap"])
    detail = "a rescaling of bce (gradient cosine 1.0000 on the probes)"
    novelty = {
        "cls-sigmoid": {"kind": "rescaled", "detail": detail},
        "reg": {"kind": "default", "detail": ""},
    }
    text = verdict({"default": default, "found": rescaled}, "rescaled", novelty=novelty)
    assert f": {detail}); it trains as that loss does" in text and "nothing new won" in text

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


def _result(status, ap=None, reason=""):
    return {"status": status, "reason": reason, "metrics": {"AP": ap} if ap is not None else {}}


def test_a_failed_final_training_is_reported_never_counted_as_zero():
    from autoloss.evolution.final import compare_rows, final_row
    from autoloss.evolution.outputs import fmt_row, gain_cells
    from autoloss.stats import describe_gain

    seeds = [7, 8, 9]
    runs = [
        _result("ok", 0.2),
        _result("failed", reason="RuntimeError: worker died\ntrace"),
        _result("ok", 0.3),
    ]
    row = final_row(BCE, NEW, seeds, runs)
    assert row["ap"] == [0.2, None, 0.3] and abs(row["mean"] - 0.25) < 1e-12  # not (0.2 + 0 + 0.3) / 3
    assert row["failures"] == [{"seed": 8, "status": "failed", "reason": "RuntimeError: worker died"}]
    assert fmt_row(row) == "0.2500 ± 0.0707 (1 failed)"
    # a diverged training is a result about the loss: AP 0, listed
    diverged = final_row(
        BCE, NEW, seeds, [_result("ok", 0.2), _result("diverged", reason="nan"), _result("ok", 0.1)]
    )
    assert diverged["ap"] == [0.2, 0.0, 0.1] and diverged["failures"][0]["status"] == "diverged"
    base = final_row("default", "default", seeds, [_result("ok", 0.1)] * 3)
    gain = compare_rows(row, base)
    assert gain["verdict"] == "cannot tell" and "seed(s) 8" in gain["reason"]
    assert describe_gain(gain).startswith("cannot tell: a training failed on seed(s) 8")
    assert gain_cells(gain)[1].startswith("cannot tell")
    assert compare_rows(diverged, base)["n"] == 3  # a diverged seed is compared, as AP 0
    everything_failed = final_row(BCE, NEW, seeds, [_result("failed", reason="x")] * 3)
    assert everything_failed["mean"] is None and fmt_row(everything_failed) == "every training failed (3)"


def test_too_few_seeds_and_a_cut_final_say_so():
    default = _row("default", "default", [0.10, 0.11, 0.12])
    named = _row(BCE, "default", [0.12, 0.13, 0.14])
    named["vs_default"] = paired_comparison(named["ap"], default["ap"])
    table = {"default": default, "found": named}
    text = verdict(table, "named", n_seeds=3)
    assert text.startswith("Too few seeds for a claim (3 < 5 held-out seeds): A named loss won")
    cut = verdict(table, "named", n_seeds=3, cut="cut short by the time limit: 3 of 5 held-out seeds trained")
    assert cut.endswith("The final was cut short by the time limit: 3 of 5 held-out seeds trained.")
    assert not verdict(table, "named", n_seeds=5).startswith("Too few")


def test_a_final_past_the_time_limit_trains_three_seeds_and_says_so(tmp_path):
    import autoloss
    from search_helpers import ECHO

    summary = autoloss.search(
        tmp_path / "run",
        budget="smoke",
        task={"name": f"{ECHO}:make_task", "iterations": 3},
        evolution={
            "branch": "reg",
            "generations": 1,
            "offspring": 60,
            "final_seeds": 6,
            "time_limit_s": 1e-6,
        },
        backend={"backend": "serial"},
    )
    assert len(summary["seeds"]) == 3 and summary["cut_short"].startswith("cut short by the time limit")
    assert "The final was cut short by the time limit: 3 of 6" in summary["verdict"]
    assert summary["stopped"].startswith("time limit")


def test_where_a_named_loss_wins_the_final_shows_the_best_new_expression_beside_it(tmp_path):
    import json

    import autoloss
    from autoloss.evolution.novelty import classify
    from search_helpers import ECHO

    # The stand-in task favours cse-b-reg by +1 AP everywhere, so a named loss wins the search.
    favoured = NAMED["cse-b-reg"].text
    summary = autoloss.search(
        tmp_path / "run",
        budget="smoke",
        task={"name": f"{ECHO}:make_task", "iterations": 3, "settings": {"favour": {favoured: 1.0}}},
        evolution={"branch": "reg", "generations": 2, "offspring": 100, "final_seeds": 3},
        backend={"backend": "serial"},
    )
    table = summary["table"]
    assert (table["found"]["cls"], table["found"]["reg"]) == ("default", favoured)
    assert summary["found_kind"] == "named" and "best named" not in table  # the found row is the best named
    # The best new one: of the trained candidates that are new, the best by rung reached, then fitness.
    events = [json.loads(x) for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    best: dict[str, tuple[int, float]] = {}
    for e in events:
        if e["branch"] == "reg" and e["stage"] in ("proxy", "promote") and e.get("status", "ok") == "ok":
            best[e["text"]] = max(best.get(e["text"], (-1, 0.0)), (e["rung"], sum(e["aps"]) / len(e["aps"])))
    assert any(rung == 1 for rung, _ in best.values())  # promotions are ranked first
    new = [
        t
        for t in sorted(best, key=lambda t: (-best[t][0], -best[t][1], t))
        if classify(t, "reg").kind == "new"
    ]
    assert new, "the stand-in search trained no new regression loss"
    row = table["best new"]
    assert (row["cls"], row["reg"]) == ("default", new[0]) and len(row["ap"]) == 3
    assert row["vs_best_named"]["n"] == 3 and "vs_default" in row
    assert summary["best_new"]["reg"]["kind"] == "new"
    assert (
        "The best new expression (" in summary["verdict"]
        and "against the best named loss" in summary["verdict"]
    )
    assert list(table)[-1] == "found"  # the winner stays the last row
