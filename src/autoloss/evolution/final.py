"""The final comparison: the search's best pair against the default, the published losses and the best named
loss, re-trained at the top rung's length on held-out seeds that no selection used, and scored on the test
split, which no selection saw.

Re-using the seed a winner was selected on would report a best-of-N draw; fresh seeds do not, and the
search-val images carry a selection luck of their own, which test does not. Gains are paired over seeds
with a 95 % t interval (autoloss.stats); "beyond noise" means the interval excludes zero, which needs at
least 3 seeds; a claim wants CLAIM_SEEDS. A training that fails in the final is reported with its error,
never counted as AP 0: a comparison that lacks one of its seeds says "cannot tell".
"""

from __future__ import annotations

import statistics
from typing import Any

from autoloss.evolution.engine import DEFAULT
from autoloss.evolution.fitness import ap_of, worst_task
from autoloss.evolution.novelty import classify, kind_of
from autoloss.evolution.proxy import ProxyRunner, first_line
from autoloss.runs.failpoints import failpoint
from autoloss.spaces.named import PUBLISHED
from autoloss.stats import paired_comparison

# Held-out seeds the final needs before its verdict is a claim; fewer (by flag) say "too few seeds".
CLAIM_SEEDS = 5
# What the final reports AP on: held-out images no rung, promotion or hall of fame saw.
FINAL_SPLIT = "test"


def found_kind(pair: tuple[str, str], cls_branch: str = "cls-sigmoid") -> str:
    """'default' (the search's best is the stock pair), 'named' (named or published losses, or a sum of
    named parts, won), 'rescaled' (a rescaling of a named loss: it trains as that loss does) or 'new'."""
    return kind_of(found_novelty(pair, cls_branch))


def found_novelty(pair: tuple[str, str], cls_branch: str) -> dict[str, dict[str, str]]:
    """Per branch of the pair: its text, kind and what it is (evolution/novelty.py)."""
    out = {}
    for branch, text in ((cls_branch, pair[0]), ("reg", pair[1])):
        novelty = classify(text, branch)
        out[branch] = {"text": text, "kind": novelty.kind, "detail": novelty.detail}
    return out


def final_comparison(search: Any, proxies: ProxyRunner) -> dict[str, Any]:
    ev = search.cfg.evolution
    top = search.rungs[-1]
    seeds = list(search.final_seeds)
    pub_cls, pub_reg = PUBLISHED[search.cfg.cls_branch]
    from autoloss.spaces.named import NAMED

    configs = {
        "default": (DEFAULT, DEFAULT),
        "published": (NAMED[pub_cls].text, NAMED[pub_reg].text),
    }
    # The honest baseline: a short proxy favours losses that train fast, so the found losses must beat
    # the best named loss, not only the default.
    named = search.best_named()
    found = search.best_pair()
    if named is not None and named != found and named not in configs.values():
        configs["best named"] = named
    # The method's claim is about new losses: where a named loss won, the best new one is shown beside it.
    new = search.best_new()
    if new is not None and new != found and new not in configs.values():
        configs["best new"] = new
    configs["found"] = found
    cut = None
    if ev.time_limit_s is not None and search.elapsed() >= ev.time_limit_s and len(seeds) > 3:
        # Out of time: the fewest seeds a confidence interval needs, and the summary says so.
        cut = f"cut short by the time limit: 3 of {len(seeds)} held-out seeds trained"
        seeds = seeds[:3]
    by_pair = proxies.evaluate_pairs(list(configs.values()), seeds, top.multiplier, split=FINAL_SPLIT)
    failpoint("final")
    table: dict[str, dict[str, Any]] = {}
    for label, (c, r) in configs.items():
        table[label] = final_row(c, r, seeds, by_pair[(c, r)])
    for label in table:
        if label != "default":
            table[label]["vs_default"] = compare_rows(table[label], table["default"])
    if "best named" in table:
        table["found"]["vs_best_named"] = compare_rows(table["found"], table["best named"])
    if "published" in table and found != configs["published"]:
        table["found"]["vs_published"] = compare_rows(table["found"], table["published"])
    # The best new expression against the best named loss: its own row, or the found one where a named
    # loss won (the claim to beat is the same).
    named_row = "best named" if "best named" in table else "found" if named == found else None
    if "best new" in table and named_row is not None:
        table["best new"]["vs_best_named"] = compare_rows(table["best new"], table[named_row])
    for label, row in table.items():  # the same comparisons on each task's own AP
        for name, entry in row["per_task"].items():
            if label != "default":
                entry["vs_default"] = compare_rows(
                    entry | {"seeds": seeds}, table["default"]["per_task"][name] | {"seeds": seeds}
                )
    candidates, anchors = search.trained_ok()
    novelty = found_novelty(found, search.cfg.cls_branch)
    kind = kind_of(novelty) if candidates + anchors else "nothing"
    return {
        "table": table,
        "seeds": seeds,
        "rungs": [
            {"index": r.index, "multiplier": r.multiplier, "seeds": list(r.seeds)} for r in search.rungs
        ],
        "final_multiplier": top.multiplier,
        "split": FINAL_SPLIT,
        "splits": _splits(search.run.path),
        "found_kind": kind,
        "found_novelty": novelty,
        "best_new": found_novelty(new, search.cfg.cls_branch) if new is not None else None,
        "verdict": verdict(table, kind, len(seeds), cut, trained_candidates=candidates, novelty=novelty),
        "cut_short": cut,
        "stopped": search.stopped,
        "proxy_trainings": proxies.count,
        "elapsed_s": search.elapsed(),
    }


def final_row(cls_: str, reg_: str, seeds: list[int], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of the final table: AP per seed, its mean and std, and each training that did not finish
    well with its reason. A diverged training is a result about the loss (AP 0, the worst fitness); one
    that failed (an error, a lost worker) says nothing about it: its AP is None, not 0."""
    aps = [None if x.get("status") == "failed" else ap_of(x) for x in runs]
    good = [a for a in aps if a is not None]
    per_task: dict[str, dict[str, Any]] = {}
    for x in runs:  # several proxy tasks: each task's own AP per seed, beside the relative fitness
        for name, t in (x.get("tasks") or {}).items():
            entry = per_task.setdefault(name, {"ap": []})
            entry["ap"].append(None if t["status"] == "failed" else t["ap"])
    for entry in per_task.values():
        done = [a for a in entry["ap"] if a is not None]
        entry["mean"] = statistics.fmean(done) if done else None
    worst = worst_task([x.get("tasks") or {} for x in runs])
    return {
        "per_task": per_task,
        "worst_task": list(worst) if worst else None,
        "cls": cls_,
        "reg": reg_,
        "seeds": seeds,
        "ap": aps,
        "mean": statistics.fmean(good) if good else None,
        "std": statistics.stdev(good) if len(good) > 1 else 0.0,
        "metrics": [x.get("metrics", {}) for x in runs],
        "status": [x.get("status") for x in runs],
        "failures": [
            {"seed": s, "status": x.get("status"), "reason": first_line(x.get("reason"))}
            for s, x in zip(seeds, runs, strict=True)
            if x.get("status") != "ok"
        ],
    }


def compare_rows(row: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The paired gain of `row` over `base`; "cannot tell" when either lacks a seed (a failed training
    is not an AP of 0, and dropping its seed would compare on the seeds that happened to work)."""
    if any(a is None for a in row["ap"]) or any(a is None for a in base["ap"]):
        missing = [
            s for s, a, b in zip(row["seeds"], row["ap"], base["ap"], strict=True) if a is None or b is None
        ]
        return {
            "n": 0,
            "mean": float("nan"),
            "std": float("nan"),
            "diffs": [],
            "ci": [float("nan"), float("nan")],
            "confidence": 0.95,
            "p_value": float("nan"),
            "p_sign_flip": float("nan"),
            "verdict": "cannot tell",
            "reason": f"a training failed on seed(s) {', '.join(map(str, missing))}",
            "beyond_noise": False,
        }
    return paired_comparison(row["ap"], base["ap"])


def verdict(
    table: dict[str, dict[str, Any]],
    kind: str,
    n_seeds: int = CLAIM_SEEDS,
    cut: str | None = None,
    trained_candidates: int | None = None,
    novelty: dict[str, dict[str, str]] | None = None,
) -> str:
    """One plain sentence: what won, and whether it beats the best named loss beyond the noise, on the
    test split; prefixed with why it is not a claim where too few seeds were trained. `kind` "nothing":
    no proxy training finished, so there is no winner; `trained_candidates` 0: only anchors trained."""
    text = _verdict(table, kind, trained_candidates, novelty)
    if "best new" in table:
        text = f"{text} {_best_new_sentence(table)}"
    if cut:
        text = f"{text} The final was {cut}."
    if n_seeds < CLAIM_SEEDS and kind != "nothing":  # no claim to qualify where nothing trained
        text = f"Too few seeds for a claim ({n_seeds} < {CLAIM_SEEDS} held-out seeds): {text}"
    return text


def _verdict(
    table: dict[str, dict[str, Any]],
    kind: str,
    trained_candidates: int | None = None,
    novelty: dict[str, dict[str, str]] | None = None,
) -> str:
    from autoloss.spaces.named import label as short

    found = table["found"]
    if kind == "nothing":
        return (
            "Nothing trained: every proxy training diverged or failed (evaluations.jsonl has each reason), "
            "so the search has no winner; best/ holds the default only as a placeholder."
        )
    if kind == "default" and trained_candidates == 0:
        return (
            "No new candidate finished a proxy training (each diverged or failed, or none was generated "
            "that passed the filters); of the default and named losses the default ranked first, so best/ "
            "holds the default."
        )
    if kind == "default":
        return (
            "The detector's default losses won the search at the top rung: no candidate beat them, so best/ "
            "holds the default."
        )
    which = " + ".join(short(t) for t in (found["cls"], found["reg"]) if t != DEFAULT)
    if kind == "rescaled":
        what = "; ".join(v["detail"] for v in (novelty or {}).values() if v["kind"] == "rescaled")
        what = what or "its gradient is parallel to a named loss's"
        return (
            f"A rescaling of a named loss won the search ({which}: {what}); it trains as that loss does with "
            f"another learning rate, so nothing new won. Against the default on held-out seeds: "
            f"{_phrase(found['vs_default'])}."
        )
    if kind == "named":
        gain = found["vs_default"]
        return (
            f"A named loss won the search at the top rung ({which}); no new loss beat it. Against the "
            f"default on held-out seeds: {_phrase(gain)}."
        )
    gain = found.get("vs_best_named")
    if gain is None:
        return f"The found losses ({which}) vs the default on held-out seeds: {_phrase(found['vs_default'])}."
    beats = {"better": "beat", "worse": "are worse than"}.get(gain["verdict"])
    named = table["best named"]
    named_s = " + ".join(short(t) for t in (named["cls"], named["reg"]) if t != DEFAULT) or "default"
    if beats is None:
        return (
            f"The found losses ({which}) do not beat the best named loss ({named_s}) beyond the seed noise: "
            f"{_phrase(gain)}."
        )
    return f"The found losses ({which}) {beats} the best named loss ({named_s}): {_phrase(gain)}."


def _best_new_sentence(table: dict[str, dict[str, Any]]) -> str:
    """Where the winner is not new: how the best new expression fared, against the best named loss if the
    table has one, else against the default."""
    from autoloss.spaces.named import label as short

    row = table["best new"]
    which = " + ".join(short(t) for t in (row["cls"], row["reg"]) if t != DEFAULT)
    if "vs_best_named" in row:
        return (
            f"The best new expression ({which}) against the best named loss: {_phrase(row['vs_best_named'])}."
        )
    return f"The best new expression ({which}) against the default: {_phrase(row['vs_default'])}."


def _phrase(gain: dict[str, Any]) -> str:
    from autoloss.stats import describe_gain

    return describe_gain(gain)


def _splits(run_path: Any) -> dict[str, Any]:
    """The run's `splits.json` (how each task's data was split), {} where it has none."""
    import json
    from pathlib import Path

    path = Path(run_path) / "splits.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
