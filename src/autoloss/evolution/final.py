"""The final comparison: the search's best pair against the default, the published losses and the best named
loss, re-trained at the top rung's length on held-out seeds that no selection used.

Re-using the seed a winner was selected on would report a best-of-N draw; fresh seeds do not. Gains are
paired over seeds with a 95 % t interval (autoloss.stats); "beyond noise" means the interval excludes zero,
which needs at least 3 seeds.
"""

from __future__ import annotations

import statistics
from typing import Any

from autoloss.evolution.engine import DEFAULT
from autoloss.evolution.proxy import ProxyRunner, ap_of
from autoloss.runs.failpoints import failpoint
from autoloss.spaces.named import PUBLISHED, name_of
from autoloss.stats import paired_comparison


def found_kind(pair: tuple[str, str]) -> str:
    """'default' (the search's best is the stock pair), 'named' (a named loss won) or 'new'."""
    cls_, reg_ = pair
    if cls_ == DEFAULT and reg_ == DEFAULT:
        return "default"
    if all(t == DEFAULT or name_of(t) is not None for t in pair):
        return "named"
    return "new"


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
    configs["found"] = found
    if ev.time_limit_s is not None and search.elapsed() >= ev.time_limit_s:
        seeds = seeds[:1]  # out of time: one held-out seed, and the table says it is too few
    by_pair = proxies.evaluate_pairs(list(configs.values()), seeds, top.multiplier)
    failpoint("final")
    table: dict[str, dict[str, Any]] = {}
    for label, (c, r) in configs.items():
        runs = by_pair[(c, r)]
        aps = [ap_of(x) for x in runs]
        table[label] = {
            "cls": c,
            "reg": r,
            "seeds": seeds,
            "ap": aps,
            "mean": statistics.fmean(aps),
            "std": statistics.stdev(aps) if len(aps) > 1 else 0.0,
            "metrics": [x.get("metrics", {}) for x in runs],
            "status": [x.get("status") for x in runs],
        }
    for label in table:
        if label != "default":
            table[label]["vs_default"] = paired_comparison(table[label]["ap"], table["default"]["ap"])
    if "best named" in table:
        table["found"]["vs_best_named"] = paired_comparison(table["found"]["ap"], table["best named"]["ap"])
    kind = found_kind(found)
    return {
        "table": table,
        "seeds": seeds,
        "rungs": [
            {"index": r.index, "multiplier": r.multiplier, "seeds": list(r.seeds)} for r in search.rungs
        ],
        "final_multiplier": top.multiplier,
        "found_kind": kind,
        "verdict": verdict(table, kind),
        "stopped": search.stopped,
        "proxy_trainings": proxies.count,
        "elapsed_s": search.elapsed(),
    }


def verdict(table: dict[str, dict[str, Any]], kind: str) -> str:
    """One plain sentence: what won, and whether it beats the best named loss beyond the noise."""
    from autoloss.spaces.named import label as short

    found = table["found"]
    if kind == "default":
        return (
            "The detector's default losses won the search at the top rung: no candidate beat them, so best/ "
            "holds the default."
        )
    which = " + ".join(short(t) for t in (found["cls"], found["reg"]) if t != DEFAULT)
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


def _phrase(gain: dict[str, Any]) -> str:
    from autoloss.stats import describe_gain

    return describe_gain(gain)
