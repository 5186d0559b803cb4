"""The CSE-Autoloss search from start to finish, as a sequence of resumable units:

    baseline -> <branch>:<generation> ... -> combine (branch "both") -> final

The baseline trains the anchors (the detector default and the named losses) at rung 0; each generation
screens its offspring, trains the top-K at rung 0 and promotes up the rungs (search/rungs.py); the final
unit re-trains the winners on held-out seeds (search/final.py).

After each unit the engine state, RNG states and caches go to `checkpoint.json`. A search killed at any
moment resumes from the last finished unit: it replays that unit's deterministic decisions, takes the
proxy trainings that had finished from `evaluations.jsonl`, and reaches the same result as a run that
was never interrupted.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from autoloss.evolution.config import SearchConfig, validate
from autoloss.evolution.engine import DEFAULT, Evaluated, Evolution
from autoloss.evolution.final import final_comparison
from autoloss.evolution.funnel import screen_generation
from autoloss.evolution.pool import SurvivorPool
from autoloss.evolution.proxy import FIX_HINT, ProxyBroken, ProxyRunner, ap_of, first_line
from autoloss.evolution.rungs import held_out_seeds, ladder, promote_count
from autoloss.executors import make_executor
from autoloss.runs.failpoints import failpoint
from autoloss.runs.rundir import RunDir
from autoloss.spaces.branches import branch as get_branch
from autoloss.spaces.generate import TreeLimits
from autoloss.spaces.named import DEFAULTS, NAMED, name_of

EVENTS = "events.jsonl"


Progress = Callable[[dict[str, Any]], None]


def _both(first: Progress, second: Progress) -> Progress:
    def progress(event: dict[str, Any]) -> None:
        first(event)
        second(event)

    return progress


class Search:
    def __init__(self, cfg: SearchConfig, run: RunDir, progress: Progress | None = None):
        validate(cfg)
        self.cfg = cfg
        self.run = run
        # Every run keeps a record of its progress and ETA (progress.jsonl) beside what the caller observes.
        from autoloss.evolution.progress import ProgressLog

        log = ProgressLog(cfg)
        self.progress: Progress = log if progress is None else _both(log, progress)
        ev = cfg.evolution
        limits = TreeLimits(max_depth=ev.max_depth, max_size=ev.max_size)
        self.rungs = ladder(ev.rungs, ev.seed)
        self.final_seeds = held_out_seeds(self.rungs, ev.final_seeds)
        self.engines = {
            b: Evolution(
                get_branch(b),
                random.Random(f"{ev.seed}:{b}"),
                offspring_count=ev.offspring,
                parents=ev.parents,
                limits=limits,
                crossover_rate=ev.crossover_rate,
                strategy=ev.strategy,
            )
            for b in cfg.searched_branches()
        }
        self.seen_syntax: dict[str, set[str]] = {b: set() for b in self.engines}
        self.seen_keys: dict[str, set[str]] = {b: set() for b in self.engines}
        self.pools = {b: SurvivorPool(ev.survivor_pool, by_mos=cfg.filters.mos) for b in self.engines}
        self.completed: list[str] = []
        self.elapsed_before = 0.0
        self.stopped: str | None = None  # why the generations ended early, if they did
        self.combos: list[dict[str, Any]] = []
        self.summary: dict[str, Any] | None = None
        self._start = time.monotonic()
        self._restored_count = 0
        self._final_cost = reserved_costs(cfg)[1]

    # --- units ----------------------------------------------------------------------------------
    def units(self) -> list[str]:
        units = ["baseline"]
        # Generation by generation, the branches taking turns: a budget or time limit that runs out ends
        # both branches at the same depth, instead of leaving the second branch with nothing.
        for g in range(self.cfg.evolution.generations):
            units += [f"{b}:{g}" for b in self.engines]
        if len(self.engines) > 1:
            units.append("combine")
        return [*units, "final"]

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._start

    def budget_left(self, proxies: ProxyRunner) -> str | None:
        ev = self.cfg.evolution
        if ev.time_limit_s is not None and self.elapsed() >= ev.time_limit_s:
            return f"time limit of {ev.time_limit_s:g} s reached"
        reserve = self.final_reserve()
        if ev.max_proxy_evals is not None and proxies.count + reserve >= ev.max_proxy_evals:
            return f"proxy-training budget of {ev.max_proxy_evals} reached ({reserve} kept for the final)"
        return None

    def final_reserve(self) -> int:
        """The final's cost, held back from the budget until the final has run, so that the budget is a
        cap on the whole search: what `reserved_costs` says it costs at most."""
        return 0 if "final" in self.completed else self._final_cost

    def run_all(self) -> dict[str, Any]:
        self._restore()
        b = self.cfg.backend
        executor = make_executor(
            b.backend,
            b.workers,
            device=self.cfg.task.device,
            workers_per_gpu=b.workers_per_gpu,
            ray_address=b.ray_address,
            gpus_per_trial=b.gpus_per_trial,
            cpus_per_trial=b.cpus_per_trial,
        )
        try:
            proxies = ProxyRunner(
                self.cfg,
                self.run,
                executor.submit,
                executor.slots,
                on_done=lambda rec: self.progress({"type": "proxy-done", **rec}),
            )
            proxies.count = self._restored_count
            units = self.units()
            self.progress(
                {
                    "type": "start",
                    "units": units,
                    "completed": list(self.completed),
                    # For observers (the live display, TensorBoard): where the run is, what it had spent.
                    "run": str(self.run.path),
                    "proxy_count": proxies.count,
                    "workers": executor.slots,
                    "elapsed_s": self.elapsed(),
                }
            )
            for unit in units:
                if unit in self.completed:
                    continue
                self.progress({"type": "unit", "unit": unit})
                self._run_unit(unit, proxies, executor.submit)
                self.completed.append(unit)
                failpoint("unit-done")
                self._checkpoint(proxies)
                # After the checkpoint: what an observer reads of this unit's journal lines is final.
                self.progress({"type": "unit-done", "unit": unit, "proxy_count": proxies.count})
        finally:
            executor.shutdown()
        from autoloss.evolution.outputs import write_outputs

        write_outputs(self)
        return self.summary or {}

    def _run_unit(self, unit: str, proxies: ProxyRunner, submit) -> None:
        if unit == "baseline":
            self._anchors(proxies)
        elif unit == "combine":
            self._combine(proxies)
        elif unit == "final":
            self.summary = final_comparison(self, proxies)
        else:
            name, gen = unit.rsplit(":", 1)
            self._generation(name, int(gen), unit, proxies, submit)

    # --- the anchors: the default and the named losses compete like any candidate --------------------
    def _anchors(self, proxies: ProxyRunner) -> None:
        """Train the detector default and every named loss of each searched branch at rung 0, and enter them
        into their branch's engine: promotion treats them like candidates, so a found loss wins only by
        beating them at the top rung. Their keys are marked seen: generation 0 does not train them again."""
        from autoloss.checks import functional_key
        from autoloss.expr.parse import parse
        from autoloss.loss import Loss

        rung0 = self.rungs[0]
        entries: list[tuple[str, str, str]] = []  # (branch, text, key)
        for b in self.engines:
            default_named = NAMED[DEFAULTS[b]]
            # The named default is the stock loss written as an expression: one behaviour, one entry.
            default_key = functional_key(Loss.parse(default_named.text, b))
            self.seen_keys[b].add(default_key)
            self.seen_syntax[b].add(parse(default_named.text).key)
            entries.append((b, DEFAULT, f"{b}:default"))
            for n in anchor_losses(b):
                key = functional_key(Loss.parse(n.text, b))
                self.seen_keys[b].add(key)
                self.seen_syntax[b].add(parse(n.text).key)
                entries.append((b, n.text, key))
        by_pair = proxies.evaluate_pairs(
            [self._job(b, t)[:2] for b, t, _ in entries], rung0.seeds, rung0.multiplier
        )
        results = [r for runs in by_pair.values() for r in runs]
        default_runs = by_pair[self._job(next(iter(self.engines)), DEFAULT)[:2]]
        if all(r.get("status") == "failed" for r in default_runs):
            # The detector's own losses did not train (a diverged loss still trained): the proxy itself is
            # broken — bad data, an absent device, workers that cannot start. Ranking against zeros would
            # report a meaningless "found" pair, so the search stops here; nothing was checkpointed, so
            # `resume` retries the baseline (its finished trainings come from the journal).
            failed = sum(r.get("status") == "failed" for r in results)
            what = (
                f"every baseline proxy training failed ({failed} of {len(results)})"
                if failed == len(results)
                else f"the default losses' baseline trainings failed ({failed} of {len(results)} failed)"
            )
            raise ProxyBroken(f"{what}, e.g.: {first_line(default_runs[0].get('reason'))} — {FIX_HINT}")
        events = []
        for b, text, key in entries:
            runs = by_pair[self._job(b, text)[:2]]
            e = Evaluated(
                text,
                key,
                -1,
                None,
                runs[0].get("status", "failed"),
                runs[0].get("reason", ""),
                rungs={"0": [ap_of(x) for x in runs]},
                anchor=True,
            )
            self.engines[b].tell(e)
            events.append(
                {
                    "unit": "baseline",
                    "branch": b,
                    "text": text,
                    "key": key,
                    "stage": "anchor",
                    "rung": 0,
                    "seeds": list(rung0.seeds),
                    "aps": e.rungs["0"],
                    "status": e.status,
                    "reason": e.reason,
                    **_per_task(runs),
                }
            )
        self.run.append(EVENTS, events)

    # --- one generation -------------------------------------------------------------------------
    def _generation(self, b: str, gen: int, unit: str, proxies: ProxyRunner, submit) -> None:
        reason = self.budget_left(proxies)
        evo = self.engines[b]
        if reason is not None:
            self.stopped = reason
            evo.generation += 1
            self.progress({"type": "skipped", "unit": unit, "reason": reason})
            return
        f = self.cfg.filters
        t0 = time.monotonic()
        candidates = evo.ask()
        scr = screen_generation(
            candidates, b, self.seen_syntax[b], self.seen_keys[b], submit, cpv=f.cpv, mos=f.mos
        )
        screen_s = time.monotonic() - t0
        rung0 = self.rungs[0]
        k = self.cfg.evolution.top_k
        pool = self.pools[b]
        top, pooled, expired = pool.pick(
            scr.survivors, k, gen, evo.rng, afford=self.affordable(proxies, rung0.cost, k)
        )
        chosen = {s["text"] for s in top}
        waiting = {s["text"] for s in pooled}
        by = "MOS score" if f.mos else "the pick"
        base = {"unit": unit, "branch": b, "generation": gen}
        events = [{**base, **e} for e in scr.events]
        events += [
            {
                **base,
                "text": s["text"],
                "key": s["key"],
                "stage": "pooled" if s["text"] in waiting else "screened",
                "mos_score": s["mos_score"],
                "reason": (
                    f"passed the filters; not among the top-K by {by}: waits in the survivor pool"
                    if s["text"] in waiting
                    else f"passed the filters; not among the top-K by {by}"
                ),
            }
            for s in scr.survivors
            if s["text"] not in chosen
        ]
        events += [
            {
                **base,
                "text": s["text"],
                "key": s["key"],
                "stage": "expired",
                "mos_score": s["mos_score"],
                "pooled_at": s["generation"],
                "reason": f"dropped from the survivor pool ({pool.capacity} better by {by} wait there)",
            }
            for s in expired
            if s["generation"] != gen
        ]
        self.run.append(EVENTS, events)
        failpoint("screened")
        counts = {**scr.counts, "proxy": len(top)}
        pool_counts = {
            "pooled": len(pooled),
            "from_pool": sum(s["generation"] != gen for s in top),
            "expired": sum(s["generation"] != gen for s in expired),
            "size": len(pool),
        }
        self.progress({"type": "screened", **base, "counts": counts, "seconds": screen_s})

        t1 = time.monotonic()
        by_pair = proxies.evaluate_pairs(
            [self._job(b, s["text"])[:2] for s in top], rung0.seeds, rung0.multiplier
        )
        proxy_events = []
        rung0_aps = []
        for s in top:
            runs = by_pair[self._job(b, s["text"])[:2]]
            aps = [ap_of(x) for x in runs]
            rung0_aps.append(statistics.fmean(aps))
            first = runs[0]
            evo.tell(
                Evaluated(
                    s["text"],
                    s["key"],
                    gen,
                    s["mos_score"],
                    first.get("status", "failed"),
                    first.get("reason", ""),
                    rungs={"0": aps},
                )
            )
            proxy_events.append(
                {
                    **base,
                    "text": s["text"],
                    "key": s["key"],
                    "stage": "proxy",
                    "mos_score": s["mos_score"],
                    **({"pooled_at": s["generation"]} if s["generation"] != gen else {}),
                    "rung": 0,
                    "seeds": list(rung0.seeds),
                    "aps": aps,
                    "ap": statistics.fmean(aps),
                    "status": first.get("status"),
                    "reason": first.get("reason", ""),
                    "metrics": first.get("metrics", {}),
                    "seconds": first.get("seconds"),
                    **_per_task(runs),
                }
            )
        self.run.append(EVENTS, proxy_events)
        promoted = self._promote(b, base, proxies)
        proxy_s = time.monotonic() - t1
        parents = evo.close_generation()
        best = evo.best(1)
        self.run.append(
            "generations.jsonl",
            [
                {
                    **base,
                    "counts": counts,
                    "screen_seconds": screen_s,
                    "proxy_seconds": proxy_s,
                    "stage_seconds": scr.seconds,
                    "aps": rung0_aps,
                    "promoted": promoted,
                    "best_ap": best[0].ap if best else None,
                    "best_rung": best[0].top_rung if best else None,
                    "parents": parents,
                    **({"pool": pool_counts} if pool.capacity else {}),
                }
            ],
        )
        self.progress(
            {
                "type": "generation",
                **base,
                "counts": counts,
                "best": [{**r.__dict__, "ap": r.ap, "rung": r.top_rung} for r in best],
                "baseline_ap": self.baseline_ap(),
            }
        )

    def _promote(self, b: str, base: dict[str, Any], proxies: ProxyRunner) -> list[dict[str, Any]]:
        """Successive halving, rung by rung: the best `promote` fraction of everything trained at a rung so
        far (anchors included) trains on the next one, if it has not already."""
        evo, fraction = self.engines[b], self.cfg.evolution.promote
        promoted: list[dict[str, Any]] = []
        for rung in self.rungs[1:]:
            pool = sorted(
                (e for e in evo.evaluated.values() if e.status == "ok" and e.reached(rung.index - 1)),
                key=lambda e: (-(e.score(rung.index - 1) or 0.0), e.text),
            )
            new = [e for e in pool[: promote_count(len(pool), fraction)] if str(rung.index) not in e.rungs]
            new = new[: self.affordable(proxies, rung.cost, len(new))]
            if not new:
                continue
            by_pair = proxies.evaluate_pairs(
                [self._job(b, e.text)[:2] for e in new], rung.seeds, rung.multiplier
            )
            events = []
            for e in new:
                runs = by_pair[self._job(b, e.text)[:2]]
                e.rungs[str(rung.index)] = [ap_of(x) for x in runs]
                broke = _first_not_ok(runs, rung.seeds)
                if broke:
                    e.rung_failures[str(rung.index)] = broke
                record = {
                    "text": e.text,
                    "key": e.key,
                    "rung": rung.index,
                    "multiplier": rung.multiplier,
                    "seeds": list(rung.seeds),
                    "aps": e.rungs[str(rung.index)],
                    "from_score": e.score(rung.index - 1),
                    "score": e.score(rung.index),
                    "pool": len(pool),
                    "failure": broke,
                    **_per_task(runs),
                }
                promoted.append(record)
                events.append({**base, "stage": "promote", "anchor": e.anchor, **record})
            self.run.append(EVENTS, events)
            failpoint("promoted")
            self.progress({"type": "promoted", **base, "rung": rung.index, "count": len(new)})
        return promoted

    def affordable(self, proxies: ProxyRunner, cost: int, wanted: int) -> int:
        """How many of `wanted` candidates costing `cost` units each (on every proxy task) fit in what is
        left of the budget."""
        ev = self.cfg.evolution
        if ev.max_proxy_evals is None:
            return wanted
        left = ev.max_proxy_evals - proxies.count - self.final_reserve()
        return max(0, min(wanted, left // (cost * len(proxies.tasks))))

    def _job(self, b: str, text: str, seed: int | None = None) -> tuple[str, str, int]:
        seed = self.rungs[0].seeds[0] if seed is None else seed
        return (*pair_of(b, text), seed)

    def baseline_ap(self) -> float | None:
        """The default's rung-0 mAP (mean over the rung's seeds), once the anchors are trained."""
        for evo in self.engines.values():
            for e in evo.evaluated.values():
                if e.text == DEFAULT:
                    return e.score(0)
        return None

    # --- combination ----------------------------------------------------------------------------
    def _combine(self, proxies: ProxyRunner) -> None:
        """The best cls and reg losses together, through the same rungs as any candidate: every pair trains
        on rung 0's seeds and length, and every pair that trained well on a rung goes on to the next, so a
        pair is compared at the top rung on the schedule and seeds of the single-branch winners. Each rung
        records its own status (one `combine` event per pair and rung); a pair that breaks on a rung stops
        there and ranks as failed, and the budget decides, rung by rung, how many pairs it can afford."""
        cls_b = self.cfg.cls_branch
        n = self.cfg.evolution.combine_top
        cls_best = [r.text for r in self.engines[cls_b].best(n) if r.text != DEFAULT]
        reg_best = [r.text for r in self.engines["reg"].best(n) if r.text != DEFAULT]
        pairs = [(c, r) for c in cls_best for r in reg_best]
        reason = self.budget_left(proxies)
        if reason is not None:
            self.stopped = reason
        if not pairs or reason is not None:
            return
        rungs: dict[tuple[str, str], dict[str, list[float]]] = {p: {} for p in pairs}
        failures: dict[tuple[str, str], dict[str, str]] = {p: {} for p in pairs}
        events = []
        alive = pairs
        for rung in self.rungs:
            alive = alive[: self.affordable(proxies, rung.cost, len(alive))]
            if not alive:
                break
            by_pair = proxies.evaluate_pairs(alive, rung.seeds, rung.multiplier)
            for (c, r), runs in by_pair.items():
                aps = [ap_of(x) for x in runs]
                broke = _first_not_ok(runs, rung.seeds)
                rungs[(c, r)][str(rung.index)] = aps
                if broke is not None:
                    failures[(c, r)][str(rung.index)] = broke
                events.append(
                    {
                        "unit": "combine",
                        "branch": "both",
                        "stage": "combine",
                        "text": f"{c} + {r}",
                        "cls": c,
                        "reg": r,
                        "rung": rung.index,
                        "seeds": list(rung.seeds),
                        "aps": aps,
                        "ap": statistics.fmean(aps),
                        "status": next((x.get("status") for x in runs if x.get("status") != "ok"), "ok"),
                        "failure": broke,
                    }
                )
            alive = [p for p in alive if not failures[p]]
        failpoint("combine")
        self.combos = [
            _combined(c, r, rungs[(c, r)], failures[(c, r)], self.rungs) for c, r in pairs if rungs[(c, r)]
        ]
        self.run.append(EVENTS, events)

    # --- the winners ----------------------------------------------------------------------------
    def best_pair(self) -> tuple[str, str]:
        """The best (cls, reg) by rung reached, then mean AP there: combinations, single-branch winners and
        the anchors (the default and the named losses) on equal terms."""
        ranked = self._ranked_pairs(lambda evo: evo.best(1))
        return ranked[0] if ranked else (DEFAULT, DEFAULT)

    def best_new(self) -> tuple[str, str] | None:
        """The best (cls, reg) whose newest part is a *new* loss (evolution/novelty.py: not the default, a
        named or published loss, a sum of named parts or a rescaling of one), ranked like `best_pair`;
        None where the search trained nothing new. Shown in the final beside the winner, which may be a
        named loss: the method's claim is about new losses."""
        from autoloss.evolution.novelty import classify

        branches = (self.cfg.cls_branch, "reg")
        for pair in self._ranked_pairs(lambda evo: [r for r in evo.best(len(evo.evaluated)) if not r.anchor]):
            if any(classify(t, b).kind == "new" for b, t in zip(branches, pair, strict=True)):
                return pair
        return None

    def _ranked_pairs(self, entries: Callable[[Evolution], list[Evaluated]]) -> list[tuple[str, str]]:
        """The combinations that trained well on every rung they were given, and `entries` of each branch's
        engine that broke on no rung (paired with the other branch's default), best first: by rung
        reached, then mean AP there, ties by text — the one order the winners are read in."""
        options: list[tuple[int, float, str, str]] = [
            (c["rung"], c["ap"], c["cls"], c["reg"]) for c in self.combos if c.get("status") == "ok"
        ]
        for b, evo in self.engines.items():
            for r in entries(evo):
                if r.rung_failures:  # broke on a rung: it wins nothing
                    continue
                options.append((r.top_rung, r.ap, *pair_of(b, r.text)))
        options.sort(key=lambda o: (-o[0], -o[1], o[2], o[3]))
        return [(c, r) for _, _, c, r in options]

    def trained_ok(self) -> tuple[int, int]:
        """(candidates, anchors) whose rung-0 training finished: new expressions, and the default and
        named losses. (0, 0) means nothing trained — no result picked the "winner"."""
        done = [r for evo in self.engines.values() for r in evo.evaluated.values() if r.status == "ok"]
        anchors = sum(1 for r in done if r.anchor)
        return len(done) - anchors, anchors

    def best_named(self) -> tuple[str, str] | None:
        """The (cls, reg) of the best named loss (the other branch at the default), ranked like every
        candidate: failed on a rung last, then rung reached, then mean AP there."""
        options = [
            (bool(r.rung_failures), r.top_rung, r.ap, *self._job(b, r.text)[:2])
            for b, evo in self.engines.items()
            for r in evo.evaluated.values()
            if r.status == "ok" and name_of(r.text) is not None
        ]
        if not options:
            return None
        options.sort(key=lambda o: (o[0], -o[1], -o[2], o[3], o[4]))
        return options[0][3], options[0][4]

    # --- checkpoint -----------------------------------------------------------------------------
    def _checkpoint(self, proxies: ProxyRunner) -> None:
        self.run.save_checkpoint(
            {
                "completed": self.completed,
                "engines": {b: e.state_dict() for b, e in self.engines.items()},
                "seen_syntax": {b: sorted(s) for b, s in self.seen_syntax.items()},
                "seen_keys": {b: sorted(s) for b, s in self.seen_keys.items()},
                "pools": {b: p.state_dict() for b, p in self.pools.items()},
                "combos": self.combos,
                "summary": self.summary,
                "stopped": self.stopped,
                "proxy_count": proxies.count,
                "elapsed_s": self.elapsed(),
            }
        )

    def _restore(self) -> None:
        state = self.run.load_checkpoint()
        completed = set(state["completed"]) if state else set()
        # Events of a unit that did not finish are replayed: drop the partial lines first.
        events = self.run.read(EVENTS)
        kept = [e for e in events if e.get("unit") in completed]
        if len(kept) != len(events):
            self.run.rewrite(EVENTS, kept)
        gens = self.run.read("generations.jsonl")
        if len([g for g in gens if g.get("unit") in completed]) != len(gens):
            self.run.rewrite("generations.jsonl", [g for g in gens if g.get("unit") in completed])
        if state is None:
            return
        self.completed = list(state["completed"])
        for b, e in self.engines.items():
            e.load_state_dict(state["engines"][b])
        self.seen_syntax = {b: set(v) for b, v in state["seen_syntax"].items()}
        self.seen_keys = {b: set(v) for b, v in state["seen_keys"].items()}
        for b, entries in state.get("pools", {}).items():  # absent: a run from before the pool
            self.pools[b].load_state_dict(entries)
        self.combos = state.get("combos", [])
        self.summary = state.get("summary")
        self.stopped = state.get("stopped")
        self.elapsed_before = state.get("elapsed_s", 0.0)
        self._restored_count = state.get("proxy_count", 0)


def _per_task(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """{"task_aps": {task: [AP per seed]}} for results of several proxy tasks (fitness.combine), else {}:
    events record each task's AP beside the combined fitness."""
    if not runs or "tasks" not in runs[0]:
        return {}
    names = list(runs[0]["tasks"])
    return {"task_aps": {n: [x.get("tasks", {}).get(n, {}).get("ap", 0.0) for x in runs] for n in names}}


def _combined(
    cls_: str, reg_: str, aps: dict[str, list[float]], failures: dict[str, str], rungs: list[Any]
) -> dict[str, Any]:
    """A combined pair's standing, as the winners read it: the highest rung it reached with every seed
    finishing, its mean AP there, and "ok" only if it broke on no rung (a failure at any rung ranks it
    as failed, like any candidate's)."""
    reached = [int(i) for i in aps if i not in failures]
    top = max(reached, default=0)
    first_failure = next((failures[i] for i in sorted(failures, key=int)), None)
    return {
        "cls": cls_,
        "reg": reg_,
        "rung": top,
        "seeds": list(rungs[top].seeds),
        "aps": aps.get(str(top), []),
        "ap": statistics.fmean(aps[str(top)]) if str(top) in aps else 0.0,
        # the status of the first rung it broke on ("diverged", "failed"), as a candidate's rung-0 status
        "status": "ok" if first_failure is None else first_failure.split(":", 1)[0],
        "failure": first_failure,
        "rungs": aps,
        "rung_failures": failures,
    }


def _first_not_ok(runs: list[dict[str, Any]], seeds: tuple[int, ...] | list[int]) -> str | None:
    """Why the first of `runs` that did not finish ok stopped, as "status: reason (seed S)"; else None."""
    for seed, x in zip(seeds, runs, strict=True):
        if x.get("status") != "ok":
            reason = (x.get("reason") or "").strip().splitlines()
            return f"{x.get('status')}: {reason[0] if reason else 'no reason given'} (seed {seed})"
    return None


def pair_of(branch: str, text: str) -> tuple[str, str]:
    """(cls, reg) a loss of `branch` trains as: beside the detector's default loss of the other branch."""
    return (DEFAULT, text) if branch == "reg" else (text, DEFAULT)


def anchor_losses(branch: str) -> list[Any]:
    """The named losses of `branch` trained as anchors beside the default: all but the named form of the
    detector's default, which is the default's own behaviour."""
    return [n for n in NAMED.values() if n.branch == branch and n.name != DEFAULTS[branch]]


# The final trains at most these pairs: the default, the published losses, the best named loss, the best
# new expression (where the winner is not new) and the found.
FINAL_PAIRS = 5


def reserved_costs(cfg: SearchConfig) -> tuple[int, int]:
    """(the baseline's cost, the final's at most), in the budget's units (proxy-length trainings, each task
    counted): what every search trains whatever its budget, so `--max-proxy-evals` must cover both."""
    ev = cfg.evolution
    rungs = ladder(ev.rungs, ev.seed)
    tasks = max(1, len(cfg.task.proxy_tasks))
    pairs = {(DEFAULT, DEFAULT)} | {
        pair_of(b, n.text) for b in cfg.searched_branches() for n in anchor_losses(b)
    }
    baseline = len(pairs) * rungs[0].cost * tasks
    final = FINAL_PAIRS * ev.final_seeds * rungs[-1].multiplier * tasks
    return baseline, final
