"""Which MOS survivors should get a proxy training? Pick rules compared on measured fitness.

MOS gates but does not rank (bench/mos_rank.py: τ ≈ −0.2 … −0.1 on what searches trained), so "the top-K
by MOS score" may be no better than a coin. This bench trains a uniform random sample of survivors, then
replays pick rules offline on it.

    .venv/bin/python bench/pick.py sample [--per-branch 40] [--min-survivors 60]
        Seconds to a few minutes. The default search's own engines (evolution/engine.py: generation 0 is
        the named losses plus ramped half-and-half trees, later generations are offspring bred from the
        parents — here the named losses, which is what the engine breeds from before anything trained)
        and its own screening (evolution/funnel.screen_generation: validity, dedup, CPV, MOS, with the
        default settings and the anchors' keys marked seen, as the driver does), generation after
        generation until each searched branch (cls-sigmoid, reg) has at least `--min-survivors` distinct
        survivors. Each survivor gets cheap features: tree size, depth, cost, operator and input counts,
        constants, the MOS score and the MOS running scores at its checkpoints. Then a seeded uniform
        random sample of `--per-branch` per branch (not the MOS top: the point is to measure MOS's
        ranking). Writes `sample.json`.

    .venv/bin/python bench/pick.py train [--workers 2] [--limit N]
        2 tasks x (80 candidates + 6 anchors) = 172 trainings, one torch thread each, two at a time:
        about 50 s each on an idle 2-core machine (≈ 75 minutes in all), twice that beside other work.
        Each sampled candidate is paired with its branch's default partner as the driver pairs them at
        rung 0 (a cls candidate with the default reg loss, a reg candidate with the default cls loss), on
        both default proxy tasks (fcos:bccd:128:300, fcos:thermal:128:300, AP on search-val), rung-0 seed;
        plus the driver's anchors (the default pair and every named loss of each branch, paired the same
        way). Anchors first, then both branches interleaved, so a partial run is usable. Every finished
        training is appended to `trainings.jsonl` at once; a rerun skips what is there.

    .venv/bin/python bench/pick.py analyse [--draws 2000] [--survivors 20]
        About a minute. Fitness as the search computes it (evolution/fitness.combine: mean over tasks of
        AP / the default pair's AP; 0 for a diverged or failed training), "hit" = fitness above the
        branch's best named loss, and a paired bootstrap of the pick rules (MOS top-K, uniform random, a
        learned ranking of the cheap features, learned/MOS top-(K-1) + 1 random), each draw one simulated
        generation, and a permutation test of MOS top-K against chance. Prints a Markdown section for
        BENCHMARKS.md and writes it to /tmp/bench_pick.md.

Cache: `$AUTOLOSS_CACHE/pick`, else `~/.cache/autoloss/pick/`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

SAMPLE = "sample.json"
TRAININGS = "trainings.jsonl"
SAMPLE_SEED = 0
MAX_GENERATIONS = 12  # a bound on the screening loop, far above what 60 survivors need


def cache_dir() -> Path:
    root = os.environ.get("AUTOLOSS_CACHE")
    path = Path(root) / "pick" if root else Path.home() / ".cache" / "autoloss" / "pick"
    path.mkdir(parents=True, exist_ok=True)
    return path


def search_config():
    """The default search's configuration (the `default` budget: what `autoloss search` runs)."""
    from autoloss.evolution.config import budget_config

    return budget_config("default")


# --- sample ---------------------------------------------------------------------------------------------


def features(text: str) -> dict[str, float]:
    """Cheap structural features of an expression: what a ranking may use without any training."""
    from autoloss.expr.parse import parse

    tree = parse(text)
    ops = Counter(n.head for _, n in tree.nodes() if n.is_op)
    leaves = Counter(n.head for _, n in tree.nodes() if n.is_input)
    consts = sum(1 for _, n in tree.nodes() if n.is_const)
    out = {"size": tree.size, "depth": tree.depth, "cost": tree.cost, "consts": consts}
    out.update({f"op:{k}": v for k, v in ops.items()})
    out.update({f"in:{k}": v for k, v in leaves.items()})
    return out


def mos_trajectory(texts: list[str], branch: str) -> list[list[float]]:
    """The running MOS scores at the checkpoints, with the search's MOS settings and no early stop: the
    same simulation the screening ran (the final score is `mos_score`), of which screening keeps only the
    end. A loss that learns fast early may train well in a 300-iteration proxy."""
    from autoloss.checks.config import CheckConfig
    from autoloss.checks.mos import simulate_batch
    from autoloss.loss import Loss

    config = CheckConfig().mos
    sims = simulate_batch([Loss.parse(t, branch) for t in texts], config)
    return [list(s.checkpoints) for s in sims]


def screen_branch(cfg, branch: str, executor, min_survivors: int) -> tuple[list[dict], list[dict]]:
    """Survivors of generation after generation of the default search's engine for `branch`."""
    from autoloss.checks import functional_key
    from autoloss.evolution.driver import anchor_losses
    from autoloss.evolution.engine import Evolution
    from autoloss.evolution.funnel import screen_generation
    from autoloss.expr.parse import parse
    from autoloss.loss import Loss
    from autoloss.spaces.branches import branch as get_branch
    from autoloss.spaces.generate import TreeLimits
    from autoloss.spaces.named import DEFAULTS, NAMED

    ev, f = cfg.evolution, cfg.filters
    # Built exactly as Search.__init__ builds it: same RNG seed string, sizes and limits.
    evo = Evolution(
        get_branch(branch),
        random.Random(f"{ev.seed}:{branch}"),
        offspring_count=ev.offspring,
        parents=ev.parents,
        limits=TreeLimits(max_depth=ev.max_depth, max_size=ev.max_size),
        crossover_rate=ev.crossover_rate,
        strategy=ev.strategy,
    )
    # As Search._anchors does: the default and named losses are trained as anchors, never as survivors.
    seen_syntax: set[str] = set()
    seen_keys: set[str] = set()
    for text in [NAMED[DEFAULTS[branch]].text, *(n.text for n in anchor_losses(branch))]:
        seen_keys.add(functional_key(Loss.parse(text, branch)))
        seen_syntax.add(parse(text).key)
    survivors: list[dict] = []
    funnel: list[dict] = []
    for gen in range(MAX_GENERATIONS):
        start = time.perf_counter()
        scr = screen_generation(
            evo.ask(), branch, seen_syntax, seen_keys, executor.submit, cpv=f.cpv, mos=f.mos
        )
        for s in scr.survivors:
            survivors.append(
                {"text": s["text"], "branch": branch, "generation": gen, "mos_score": s["mos_score"]}
            )
        funnel.append({"generation": gen, "counts": scr.counts, "seconds": time.perf_counter() - start})
        print(f"  {branch} generation {gen}: {scr.counts} in {time.perf_counter() - start:.1f} s", flush=True)
        # Nothing is told (no training here), so the engine breeds the next generation from the named
        # losses: its own fallback before anything trained.
        evo.close_generation()
        if len(survivors) >= min_survivors:
            break
    return survivors, funnel


def sample(per_branch: int, min_survivors: int) -> None:
    from autoloss.executors import make_executor

    cfg = search_config()
    branches = cfg.searched_branches()
    executor = make_executor("process", cfg.backend.workers)
    out: dict[str, Any] = {"seed": SAMPLE_SEED, "config": dataclasses.asdict(cfg.evolution), "branches": {}}
    try:
        for b in branches:
            survivors, funnel = screen_branch(cfg, b, executor, min_survivors)
            for s, traj in zip(survivors, mos_trajectory([s["text"] for s in survivors], b), strict=True):
                s["features"] = {**features(s["text"]), "mos_score": s["mos_score"]}
                s["features"].update({f"mos@{i}": v for i, v in enumerate(traj)})
            # Seeded and independent of dict order: sort by text, then draw.
            pool = sorted(survivors, key=lambda s: s["text"])
            rng = random.Random(f"pick:{SAMPLE_SEED}:{b}")
            chosen = rng.sample(pool, min(per_branch, len(pool)))
            out["branches"][b] = {
                "funnel": funnel,
                "survivors": survivors,
                "sample": [s["text"] for s in chosen],
            }
            print(f"{b}: {len(survivors)} survivors, {len(chosen)} sampled", flush=True)
    finally:
        executor.shutdown()
    path = cache_dir() / SAMPLE
    if path.exists():
        # The trainings in the cache are of the sampled texts: a different sample would orphan them.
        before = json.loads(path.read_text(encoding="utf-8"))
        old = {b: v["sample"] for b, v in before["branches"].items()}
        new = {b: v["sample"] for b, v in out["branches"].items()}
        if old != new:
            raise SystemExit(f"{path} holds another sample; move it (and {TRAININGS}) away first")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1), encoding="utf-8")
    tmp.replace(path)  # atomic: a half-written sample never replaces a good one
    print(f"wrote {path}")


def load_sample() -> dict[str, Any]:
    path = cache_dir() / SAMPLE
    if not path.exists():
        raise SystemExit(f"no {path}: run `bench/pick.py sample` first")
    return json.loads(path.read_text(encoding="utf-8"))


# --- train ----------------------------------------------------------------------------------------------


def pair(branch: str, text: str) -> tuple[str, str]:
    """(cls, reg) as the search pairs a candidate of `branch` (driver.pair_of)."""
    from autoloss.evolution.driver import pair_of

    return pair_of(branch, text)


def anchor_pairs(branches: list[str]) -> list[tuple[str, str, str]]:
    """(role, cls, reg) of the driver's anchors: the default pair, every named loss of each branch."""
    from autoloss.evolution.driver import anchor_losses
    from autoloss.evolution.engine import DEFAULT

    out = [("default", DEFAULT, DEFAULT)]
    for b in branches:
        out += [(f"anchor:{b}:{n.name}", *pair(b, n.text)) for n in anchor_losses(b)]
    return out


def work_list(smp: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(role, cls, reg) in training order: the anchors, then the branches' samples interleaved."""
    branches = list(smp["branches"])
    items = anchor_pairs(branches)
    lists = [[(f"candidate:{b}", *pair(b, t)) for t in smp["branches"][b]["sample"]] for b in branches]
    for i in range(max(len(x) for x in lists)):
        items += [x[i] for x in lists if i < len(x)]
    return items


def read_trainings() -> list[dict[str, Any]]:
    path = cache_dir() / TRAININGS
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill: that training is simply redone
                continue
    return out


def train(workers: int, limit: int | None) -> None:
    from concurrent.futures import FIRST_COMPLETED, wait

    from autoloss.evolution.proxy import sub_tasks
    from autoloss.evolution.rungs import ladder
    from autoloss.evolution.work import proxy_task, trial_spec
    from autoloss.executors import make_executor

    cfg = search_config()
    seed = ladder(cfg.evolution.rungs, cfg.evolution.seed)[0].seeds[0]  # rung 0's first seed
    tasks = sub_tasks(cfg)
    smp = load_sample()
    done = {(r["task"], r["cls"], r["reg"], r["seed"]) for r in read_trainings()}
    # Pair-major, tasks inside: a candidate is usable (trained on both tasks) as soon as possible.
    jobs = [(role, t, c, r) for role, c, r in work_list(smp) for t in tasks]
    jobs = [j for j in jobs if (j[1].label, j[2], j[3], seed) not in done]
    if limit is not None:
        jobs = jobs[:limit]
    total = len(jobs)
    print(f"{len(done)} trainings in the cache; {total} to run on {workers} workers", flush=True)
    if not jobs:
        return
    executor = make_executor("process", workers)
    path = cache_dir() / TRAININGS
    start = time.perf_counter()
    running: dict[Any, tuple] = {}
    finished = 0
    try:
        queue = list(jobs)
        while queue or running:
            while queue and len(running) < workers:
                job = queue.pop(0)
                role, t, c, r = job
                spec = trial_spec(cfg.task.name, t.settings, dataclasses.replace(t.schedule, seed=seed))
                running[executor.submit(proxy_task, spec, c, r)] = job
            ready, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in ready:
                role, t, c, r = running.pop(fut)
                try:
                    res = fut.result()
                except Exception as exc:  # a lost worker: recorded as a failed training, a miss
                    res = {
                        "status": "failed",
                        "reason": f"{type(exc).__name__}: {exc}",
                        "metrics": {},
                        "seconds": 0.0,
                    }
                record = {
                    "task": t.label,
                    "role": role,
                    "cls": c,
                    "reg": r,
                    "seed": seed,
                    "status": res.get("status", "failed"),
                    "ap": float(res.get("metrics", {}).get("AP", 0.0)) if res.get("status") == "ok" else None,
                    "seconds": float(res.get("seconds") or 0.0),
                    "reason": str(res.get("reason", ""))[:300],
                }
                with path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
                finished += 1
                wall = time.perf_counter() - start
                eta = wall / finished * (total - finished)
                ap = f"{record['ap']:.4f}" if record["ap"] is not None else record["status"]
                print(
                    f"[{finished}/{total}] {role} {t.label} AP {ap} in {record['seconds']:.0f} s; "
                    f"wall {wall / finished:.1f} s per training; ETA {eta / 60:.0f} min",
                    flush=True,
                )
    finally:
        executor.shutdown()


# --- analyse --------------------------------------------------------------------------------------------

RIDGE = 1.0  # ridge penalty on standardised features: ~20 training rows and ~30 features need shrinkage
OUTER = 2000  # bootstrap worlds (resampled candidate pools) for the confidence intervals
INNER = 20  # simulated generations per bootstrap world


def fitness_table(smp: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per branch: the candidates trained on every task with their fitness and features, and the named
    losses' fitness, computed by the search's own `fitness.combine` against the default pair's AP."""
    from autoloss.evolution.engine import DEFAULT
    from autoloss.evolution.fitness import ap_of, combine
    from autoloss.evolution.proxy import sub_tasks
    from autoloss.spaces.named import DEFAULTS, NAMED

    labels = [t.label for t in sub_tasks(search_config())]
    got: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in records:
        result = {
            "status": r["status"],
            "reason": r.get("reason", ""),
            "metrics": {},
            "seconds": r["seconds"],
        }
        if r["status"] == "ok":
            result["metrics"] = {"AP": r["ap"]}
        got.setdefault((r["cls"], r["reg"]), {})[r["task"]] = result
    default = got.get((DEFAULT, DEFAULT), {})
    if set(default) != set(labels):
        raise SystemExit("the default pair is not trained on every task yet: nothing can be normalised")
    default_aps = {t: [ap_of(default[t])] for t in labels}

    def fit(cls_: str, reg: str) -> float | None:
        per = got.get((cls_, reg), {})
        if set(per) != set(labels):
            return None  # not trained on both tasks (yet)
        return ap_of(combine({t: per[t] for t in labels}, default_aps))

    out: dict[str, Any] = {}
    for b, v in smp["branches"].items():
        by_text = {s["text"]: s for s in v["survivors"]}
        cands = []
        for text in v["sample"]:
            f = fit(*pair(b, text))
            if f is not None:
                cands.append({**by_text[text], "fitness": f})
        named = {n.name: fit(*pair(b, n.text)) for n in NAMED.values() if n.branch == b}
        named[DEFAULTS[b]] = fit(DEFAULT, DEFAULT)  # the named form of the default is the default itself
        out[b] = {"candidates": cands, "named": named}
    return out


def design(cands: list[dict[str, Any]]) -> tuple[Any, list[str]]:
    """The feature matrix [n, f] (a feature a candidate lacks, e.g. an operator it does not use, is 0)."""
    import numpy as np

    names = sorted({k for c in cands for k in c["features"]})
    x = np.array([[float(c["features"].get(k) or 0.0) for k in names] for c in cands])
    return np.nan_to_num(x), names


def ridge_scores(x, y, train, test):
    """Ridge regression of fitness on standardised features, fitted on rows `train`, scoring rows `test`.
    Standardised with the training rows only, so nothing about the scored rows leaks into the fit."""
    import numpy as np

    xt = x[train]
    mu, sd = xt.mean(axis=0), xt.std(axis=0)
    sd[sd == 0] = 1.0  # a feature constant on the training rows carries nothing: it stays 0
    a = (xt - mu) / sd
    yc = y[train] - y[train].mean()
    w = np.linalg.solve(a.T @ a + RIDGE * np.eye(a.shape[1]), a.T @ yc)
    return ((x[test] - mu) / sd) @ w


RULES = (
    "MOS top-K",
    "uniform random",
    "learned (ridge)",
    "learned top-(K-1) + 1 random",
    "MOS top-(K-1) + 1 random",
)


def simulate(pool, x, y, mos, text, hit, s, k, rng):
    """One generation: `s` survivors drawn from `pool` (indices into the candidates, repeats possible in a
    bootstrap world), each rule picks `k`; per rule (any hit, hit rate of the picks, best fitness)."""
    import numpy as np

    pos = rng.choice(len(pool), size=s, replace=False)
    gen = pool[pos]
    drawn = set(gen.tolist())
    # Fitted only on candidates that are not in this generation (a repeat of a drawn one is the same one).
    train = np.array([i for i in pool if i not in drawn])
    # MOS order as funnel.pick_top_k ranks: by score, ties by text.
    by_mos = sorted(gen.tolist(), key=lambda i: (-mos[i], text[i]))
    by_learned = gen[np.argsort(-ridge_scores(x, y, train, gen), kind="stable")].tolist()
    rand = rng.permutation(gen).tolist()

    def mix(order):
        head = order[: k - 1]
        rest = [i for i in gen.tolist() if i not in head]
        return [*head, rest[int(rng.integers(len(rest)))]]

    picks = {
        RULES[0]: by_mos[:k],
        RULES[1]: rand[:k],
        RULES[2]: by_learned[:k],
        RULES[3]: mix(by_learned),
        RULES[4]: mix(by_mos),
    }
    return {r: (float(any(hit[p])), float(np.mean(hit[p])), float(np.max(y[p])), p) for r, p in picks.items()}


def replay(cands: list[dict[str, Any]], threshold: float, s: int, k: int, draws: int, seed: int):
    """Point estimates over `draws` generations from the measured pool, and percentile intervals over
    OUTER bootstrap worlds (the pool resampled with replacement: the uncertainty of having measured only
    these candidates), each the mean of INNER generations; every rule sees the same generations."""
    import numpy as np

    x, _ = design(cands)
    y = np.array([c["fitness"] for c in cands])
    mos = np.array([c["mos_score"] for c in cands])
    text = [c["text"] for c in cands]
    hit = y > threshold
    n = len(cands)
    rng = np.random.default_rng(seed)
    point = {r: np.zeros(3) for r in RULES}
    # How many different candidates a rule ever picks: a rule that keeps picking the same few rests its
    # whole estimate on them, whatever the number of draws.
    picked: dict[str, set[int]] = {r: set() for r in RULES}
    everyone = np.arange(n)
    for _ in range(draws):
        for r, v in simulate(everyone, x, y, mos, text, hit, s, k, rng).items():
            point[r] += np.array(v[:3]) / draws
            picked[r].update(v[3])
    worlds = {r: np.zeros((OUTER, 3)) for r in RULES}
    for w in range(OUTER):
        pool = rng.integers(n, size=n)
        while len(set(pool.tolist())) < s + 3:  # too few distinct candidates left to fit on: draw again
            pool = rng.integers(n, size=n)
        for _ in range(INNER):
            for r, v in simulate(pool, x, y, mos, text, hit, s, k, rng).items():
                worlds[r][w] += np.array(v[:3]) / INNER
    return point, worlds, {r: len(p) for r, p in picked.items()}


def mos_vs_chance(cands: list[dict[str, Any]], threshold: float, s: int, k: int, draws: int, seed: int):
    """MOS top-K's hit rate, the base rate, and a permutation p-value against "MOS says nothing about
    fitness". MOS's picks depend only on which survivors a generation draws, never on fitness, so its hit
    rate is sum_i share_i * hit_i (share_i: how often it picks candidate i); shuffling the hits over the
    candidates is the null. Unlike the bootstrap, this needs no candidate outside the sample: the bootstrap
    cannot invent a new top-MOS candidate, so its intervals for a top-K rule are too narrow."""
    import numpy as np
    from scipy.stats import permutation_test

    mos = [c["mos_score"] for c in cands]
    text = [c["text"] for c in cands]
    hit = np.array([c["fitness"] > threshold for c in cands], dtype=float)
    rng = np.random.default_rng(seed)
    share = np.zeros(len(cands))
    for _ in range(draws):
        gen = rng.choice(len(cands), size=s, replace=False).tolist()
        for i in sorted(gen, key=lambda i: (-mos[i], text[i]))[:k]:
            share[i] += 1.0 / (draws * k)
    res = permutation_test(
        (share, hit),
        lambda a, b, axis=-1: (a * b).sum(axis=axis),
        permutation_type="pairings",
        n_resamples=9999,
        vectorized=True,
        random_state=seed,
    )
    return float(res.statistic), float(hit.mean()), float(res.pvalue)


def ci(values) -> tuple[float, float]:
    import numpy as np

    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def cell(point: float, values, signed: bool = False) -> str:
    lo, hi = ci(values)
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(point)} [{f.format(lo)}, {f.format(hi)}]"


def branch_section(b: str, v: dict[str, Any], k: int, draws: int, survivors: int, seed: int):
    """The lines about one branch, its table rows, and sentences for the reading. Two meanings of "hit":
    beating the branch's best named loss (the brief's), and beating the default (fitness 1.0 by
    definition), which more candidates reach and so separates the rules with fewer trainings."""
    import numpy as np
    from scipy.stats import kendalltau

    cands = v["candidates"]
    named = {n: f for n, f in v["named"].items() if f is not None}
    best_named = max(named, key=named.get)
    fit = np.array([c["fitness"] for c in cands])
    named_text = ", ".join(f"{n} {f:.3f}" for n, f in sorted(named.items(), key=lambda t: -t[1]))
    lines = [f"**{b}**: {len(cands)} sampled candidates trained on both tasks; named losses: {named_text}."]
    if len(cands):
        lines[-1] += (
            f" Candidates' fitness median {np.median(fit):.3f}, best {fit.max():.3f}; "
            f"zero (diverged or failed): {int((fit == 0).sum())}."
        )
    if len(cands) >= 4:
        tau = kendalltau([c["mos_score"] for c in cands], fit)
        lines.append(f"Kendall τ(MOS score, fitness) = {tau.statistic:+.2f} (p = {tau.pvalue:.2f}).")
    s = min(survivors, len(cands) // 2)
    if s <= k or len(cands) < 8:
        return [*lines, f"Too few trained candidates in `{b}` to replay the rules."], [], []
    lines.append(f"Replayed with S = {s} survivors per simulated generation, K = {k} picks (default top-K).")
    rows, verdicts = [], []
    meanings = {named[best_named]: f"> {best_named}"}
    meanings.setdefault(1.0, "> default")  # the same test when the default is the best named loss
    for threshold, label in meanings.items():
        hits = int((fit > threshold).sum())
        point, worlds, distinct = replay(cands, threshold, s, k, draws, seed)
        stat, base_rate, p_mos = mos_vs_chance(cands, threshold, s, k, draws, seed)
        lines.append(
            f"Hit {label} ({threshold:.3f}): {hits} of {len(cands)} candidates. MOS top-K hit rate "
            f"{stat:.3f} vs the base rate {base_rate:.3f} (uniform random's expectation); permutation test "
            f"(hits shuffled over the candidates) two-sided p = {p_mos:.3f}."
        )
        base = worlds[RULES[0]]
        diffs = {}
        for r in RULES:
            p, w = point[r], worlds[r]
            d_hit, d_best = w[:, 1] - base[:, 1], w[:, 2] - base[:, 2]
            diffs[r] = (p[1] - point[RULES[0]][1], *ci(d_hit))
            rest = (
                "— | —"
                if r == RULES[0]
                else f"{cell(diffs[r][0], d_hit, True)} | {cell(p[2] - point[RULES[0]][2], d_best, True)}"
            )
            rows.append(
                f"| {b} | {label} | {r} | {cell(p[1], w[:, 1])} | {cell(p[0], w[:, 0])} "
                f"| {cell(p[2], w[:, 2])} | {rest} | {distinct[r]} |"
            )
        if hits == 0:
            verdicts.append(f"`{b}`, hit {label}: no sampled candidate is a hit, so no rule can differ")
            continue
        best = max(RULES, key=lambda r: (point[r][1], r == RULES[1]))
        if best == RULES[0]:
            verdict = (
                f"`{b}`, hit {label}: MOS top-K has the highest hit rate of picks ({point[best][1]:.3f})"
            )
        else:
            gain, lo, hi = diffs[best]
            verdict = (
                f"`{b}`, hit {label}: the best hit rate of picks is {best}'s ({point[best][1]:.3f} vs MOS "
                f"top-K's {point[RULES[0]][1]:.3f}; paired difference {gain:+.3f}, 95 % CI "
                f"[{lo:+.3f}, {hi:+.3f}], {'above 0' if lo > 0 else 'not above 0'})"
            )
        verdicts.append(f"{verdict}; MOS top-K against chance p = {p_mos:.2f}")
    return lines, rows, verdicts


def analyse(draws: int, survivors: int) -> None:
    import datetime

    import numpy as np

    from machine import describe

    k = search_config().evolution.top_k
    smp = load_sample()
    records = read_trainings()
    table = fitness_table(smp, records)
    secs = [r["seconds"] for r in records]
    bad = Counter(r["status"] for r in records if r["status"] != "ok")
    roles = Counter(
        "anchor" if r["role"] == "default" or r["role"].startswith("anchor") else "candidate" for r in records
    )
    lines = [
        "## Which survivors to train: pick rules replayed on measured fitness (`bench/pick.py`)",
        "",
        f"Machine: {describe()}. Date: {datetime.date.today().isoformat()}.",
        "",
        "Command: `bench/pick.py sample && bench/pick.py train && bench/pick.py analyse "
        f"--draws {draws} --survivors {survivors}`.",
        "",
        f"Trainings: {len(records)} ({roles['anchor']} of anchors, {roles['candidate']} of candidates; "
        "FCOS-tiny on fcos:bccd:128:300 and fcos:thermal:128:300, AP on search-val, rung-0 seed), "
        f"{np.mean(secs) if secs else 0:.0f} s each on average (one torch thread, two at a time, on a "
        f"machine shared with other work), {sum(secs) / 3600:.1f} training-hours; "
        f"not ok: {dict(bad) or 'none'}.",
        "",
    ]
    for b, v in smp["branches"].items():
        funnel = "; ".join(f"gen {g['generation']}: {g['counts']}" for g in v["funnel"])
        lines.append(f"- `{b}`: {len(v['survivors'])} MOS survivors ({funnel}); {len(v['sample'])} sampled.")
    lines += [
        "",
        "Survivors come from the default search's engines and `screen_generation` (generation 0: named "
        "losses + ramped half-and-half; later generations: offspring bred from the named losses, the "
        "engine's parents before anything trained), with the anchors' keys marked seen as the driver does; "
        "the sample is uniform over them (seed 0), not the MOS top. Fitness = mean over the two tasks of "
        "AP / the default pair's AP (`fitness.combine`; 0 if a training diverged or failed); a hit beats "
        "the branch's best named loss (the default's named form included).",
        "",
    ]
    rows, verdicts = [], []
    for seed, (b, v) in enumerate(table.items()):
        more, new_rows, said = branch_section(b, v, k, draws, survivors, seed)
        lines += [*more, ""]
        rows += new_rows
        verdicts += said
    lines += [
        f"Point estimates: {draws} simulated generations drawn from the measured candidates; 95 % intervals: "
        f"percentiles over {OUTER} bootstrap worlds (the candidates resampled with replacement, {INNER} "
        "generations each, the same generations for every rule: paired). Learned: ridge regression "
        f"(penalty {RIDGE:g}) of fitness on standardised cheap features (size, depth, cost, constants, "
        "operator and input counts, MOS score, MOS running scores at its checkpoints), fitted only on "
        "candidates outside the generation it ranks.",
        "",
        "| branch | hit | rule | hit rate of picks | P(≥1 hit per generation) | best fitness of picks "
        "| hit rate − MOS top-K (paired) | best fitness − MOS top-K (paired) | candidates ever picked |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Reading: "
        + ("; ".join(verdicts) or "too few trained candidates to compare the rules")
        + ". A top-K rule that picks from few distinct candidates "
        "(last column) rests on them: its bootstrap interval cannot include candidates that were never "
        "measured and is too narrow; the permutation test does not have that blind spot.",
    ]
    text = "\n".join(lines)
    print(text)
    Path("/tmp/bench_pick.md").write_text(text + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--per-branch", type=int, default=40)
    s.add_argument("--min-survivors", type=int, default=60)
    t = sub.add_parser("train")
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--limit", type=int, default=None, help="run at most this many trainings")
    a = sub.add_parser("analyse")
    a.add_argument("--draws", type=int, default=2000)
    a.add_argument("--survivors", type=int, default=20)
    args = parser.parse_args()
    if args.command == "sample":
        sample(args.per_branch, args.min_survivors)
    elif args.command == "train":
        train(args.workers, args.limit)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        analyse(args.draws, args.survivors)


if __name__ == "__main__":
    main()
