"""The CSE-Autoloss search from start to finish, as a sequence of resumable units:

    baseline -> <branch>:<generation> ... -> combine (branch "both") -> final

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

from autoloss.executors import make_executor
from autoloss.runs.rundir import RunDir
from autoloss.search.config import SearchConfig, validate
from autoloss.search.engine import Evaluated, Evolution
from autoloss.search.funnel import pick_top_k, screen_generation
from autoloss.search.proxy import ProxyRunner, ap_of
from autoloss.spaces.branches import branch as get_branch
from autoloss.spaces.generate import TreeLimits
from autoloss.spaces.named import name_of

EVENTS = "events.jsonl"
Progress = Callable[[dict[str, Any]], None]
PUBLISHED = {"cls-sigmoid": ("cse-b-cls", "cse-b-reg"), "cls-softmax": ("cse-a-cls", "cse-a-reg")}


class Search:
    def __init__(self, cfg: SearchConfig, run: RunDir, progress: Progress | None = None):
        validate(cfg)
        self.cfg = cfg
        self.run = run
        self.progress = progress or (lambda event: None)
        ev = cfg.evolution
        limits = TreeLimits(max_depth=ev.max_depth, max_size=ev.max_size)
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
        self.completed: list[str] = []
        self.elapsed_before = 0.0
        self.stopped: str | None = None  # why the generations ended early, if they did
        self.combos: list[dict[str, Any]] = []
        self.summary: dict[str, Any] | None = None
        self._start = time.monotonic()
        self._restored_count = 0

    # --- units ----------------------------------------------------------------------------------
    def units(self) -> list[str]:
        units = ["baseline"]
        for b in self.engines:
            units += [f"{b}:{g}" for g in range(self.cfg.evolution.generations)]
        if len(self.engines) > 1:
            units.append("combine")
        return [*units, "final"]

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._start

    def budget_left(self, proxies: ProxyRunner) -> str | None:
        ev = self.cfg.evolution
        if ev.time_limit_s is not None and self.elapsed() >= ev.time_limit_s:
            return f"time limit of {ev.time_limit_s:g} s reached"
        if ev.max_proxy_evals is not None and proxies.count >= ev.max_proxy_evals:
            return f"proxy-training budget of {ev.max_proxy_evals} reached"
        return None

    def run_all(self) -> dict[str, Any]:
        self._restore()
        b = self.cfg.backend
        executor = make_executor(
            b.backend,
            b.workers,
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
            self.progress({"type": "start", "units": units, "completed": list(self.completed)})
            for unit in units:
                if unit in self.completed:
                    continue
                self.progress({"type": "unit", "unit": unit})
                self._run_unit(unit, proxies, executor.submit)
                self.completed.append(unit)
                self._checkpoint(proxies)
        finally:
            executor.shutdown()
        from autoloss.search.outputs import write_outputs

        write_outputs(self)
        return self.summary or {}

    def _run_unit(self, unit: str, proxies: ProxyRunner, submit) -> None:
        if unit == "baseline":
            # The default on the search seed, and on as many of the final seeds as there are free workers:
            # a lone training would leave the other workers idle, and the final comparison needs them anyway.
            ev = self.cfg.evolution
            seeds = range(ev.seed, ev.seed + max(1, min(ev.final_seeds, proxies.slots)))
            proxies.evaluate([("default", "default", s) for s in seeds])
        elif unit == "combine":
            self._combine(proxies)
        elif unit == "final":
            self._final(proxies)
        else:
            name, gen = unit.rsplit(":", 1)
            self._generation(name, int(gen), unit, proxies, submit)

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
        top = pick_top_k(scr.survivors, self.cfg.evolution.top_k, evo.rng, by_mos=f.mos)
        ev = self.cfg.evolution
        if ev.max_proxy_evals is not None:
            top = top[: max(0, ev.max_proxy_evals - proxies.count)]
        chosen = {s["text"] for s in top}
        base = {"unit": unit, "branch": b, "generation": gen}
        events = [{**base, **e} for e in scr.events]
        events += [
            {
                **base,
                "text": s["text"],
                "key": s["key"],
                "stage": "screened",
                "mos_score": s["mos_score"],
                "reason": "passed the filters; not among the top-K by MOS score",
            }
            for s in scr.survivors
            if s["text"] not in chosen
        ]
        self.run.append(EVENTS, events)
        counts = {**scr.counts, "proxy": len(top)}
        self.progress({"type": "screened", **base, "counts": counts, "seconds": screen_s})

        jobs = [self._job(b, s["text"]) for s in top]
        t1 = time.monotonic()
        results = proxies.evaluate(jobs)
        proxy_s = time.monotonic() - t1
        proxy_events = []
        for s, res in zip(top, results, strict=True):
            ap = ap_of(res)
            evo.tell(
                Evaluated(
                    s["text"],
                    s["key"],
                    gen,
                    s["mos_score"],
                    ap,
                    res.get("status", "failed"),
                    res.get("reason", ""),
                )
            )
            proxy_events.append(
                {
                    **base,
                    "text": s["text"],
                    "key": s["key"],
                    "stage": "proxy",
                    "mos_score": s["mos_score"],
                    "ap": ap,
                    "status": res.get("status"),
                    "reason": res.get("reason", ""),
                    "metrics": res.get("metrics", {}),
                    "seconds": res.get("seconds"),
                }
            )
        self.run.append(EVENTS, proxy_events)
        parents = evo.close_generation()
        self.run.append(
            "generations.jsonl",
            [
                {
                    **base,
                    "counts": counts,
                    "screen_seconds": screen_s,
                    "proxy_seconds": proxy_s,
                    "stage_seconds": scr.seconds,
                    "aps": [ap_of(r) for r in results],
                    "best_ap": max((r.ap for r in evo.best(1)), default=None),
                    "parents": parents,
                }
            ],
        )
        self.progress(
            {
                "type": "generation",
                **base,
                "counts": counts,
                "best": [r.__dict__ for r in evo.best(1)],
                "baseline_ap": self.baseline_ap(proxies),
            }
        )

    def _job(self, b: str, text: str, seed: int | None = None) -> tuple[str, str, int]:
        seed = self.cfg.evolution.seed if seed is None else seed
        return (text, "default", seed) if b != "reg" else ("default", text, seed)

    def baseline_ap(self, proxies: ProxyRunner) -> float | None:
        from autoloss.search.proxy import eval_id

        res = proxies.cache.get(eval_id("default", "default", self.cfg.evolution.seed))
        return ap_of(res) if res else None

    # --- combination and final re-training ------------------------------------------------------
    def best_pair(self) -> tuple[str, str]:
        """The best (cls, reg) on the search seed: among combinations and single-branch winners."""
        options: list[tuple[float, str, str]] = [(c["ap"], c["cls"], c["reg"]) for c in self.combos]
        for b, evo in self.engines.items():
            for r in evo.best(1):
                cls_, reg_ = self._job(b, r.text)[:2]
                options.append((r.ap, cls_, reg_))
        if not options:
            return ("default", "default")
        options.sort(key=lambda o: (-o[0], o[1], o[2]))
        return options[0][1], options[0][2]

    def best_named(self) -> tuple[str, str] | None:
        """The (cls, reg) pair of the named loss with the best proxy mAP on the search seed, if any was
        trained (the other branch at the default)."""
        options = [
            (r.ap, *self._job(b, r.text)[:2])
            for b, evo in self.engines.items()
            for r in evo.evaluated.values()
            if r.status == "ok" and name_of(r.text) is not None
        ]
        if not options:
            return None
        options.sort(key=lambda o: (-o[0], o[1], o[2]))
        return options[0][1], options[0][2]

    def _combine(self, proxies: ProxyRunner) -> None:
        cls_b = self.cfg.cls_branch
        n = self.cfg.evolution.combine_top
        cls_best = [r.text for r in self.engines[cls_b].best(n)]
        reg_best = [r.text for r in self.engines["reg"].best(n)]
        jobs = [(c, r, self.cfg.evolution.seed) for c in cls_best for r in reg_best]
        reason = self.budget_left(proxies)
        if reason is not None:
            self.stopped = reason
        if not jobs or reason is not None:
            return
        results = proxies.evaluate(jobs)
        self.combos = [
            {"cls": c, "reg": r, "ap": ap_of(res), "status": res.get("status")}
            for (c, r, _), res in zip(jobs, results, strict=True)
        ]
        self.run.append(
            EVENTS,
            [
                {
                    "unit": "combine",
                    "branch": "both",
                    "stage": "combine",
                    "text": f"{c['cls']} + {c['reg']}",
                    **c,
                }
                for c in self.combos
            ],
        )

    def _final(self, proxies: ProxyRunner) -> None:
        ev = self.cfg.evolution
        seeds = [ev.seed + i for i in range(ev.final_seeds)]
        pub_cls, pub_reg = PUBLISHED[self.cfg.cls_branch]
        configs = {"default": ("default", "default"), "published": (pub_cls, pub_reg)}
        # The honest baseline: a short proxy favours losses that train fast, so the found losses must
        # beat the best named loss the search trained, not only the default.
        named = self.best_named()
        found = self.best_pair()
        if named is not None and named != found:
            configs["best named"] = named
        configs["found"] = found
        if ev.time_limit_s is not None and self.elapsed() >= ev.time_limit_s:
            seeds = seeds[:1]  # out of time: report the search seed only, and say so
        jobs = [(c, r, s) for (c, r) in configs.values() for s in seeds]
        results = proxies.evaluate(jobs)
        by_job = {job: res for job, res in zip(jobs, results, strict=True)}
        table = {}
        for label, (c, r) in configs.items():
            runs = [by_job[(c, r, s)] for s in seeds]
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
                table[label]["vs_default"] = paired_gain(table[label]["ap"], table["default"]["ap"])
        if "best named" in table:
            table["found"]["vs_best_named"] = paired_gain(table["found"]["ap"], table["best named"]["ap"])
        self.summary = {
            "table": table,
            "seeds": seeds,
            "stopped": self.stopped,
            "proxy_trainings": proxies.count,
            "elapsed_s": self.elapsed(),
        }

    # --- checkpoint -----------------------------------------------------------------------------
    def _checkpoint(self, proxies: ProxyRunner) -> None:
        self.run.save_checkpoint(
            {
                "completed": self.completed,
                "engines": {b: e.state_dict() for b, e in self.engines.items()},
                "seen_syntax": {b: sorted(s) for b, s in self.seen_syntax.items()},
                "seen_keys": {b: sorted(s) for b, s in self.seen_keys.items()},
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
        self.combos = state.get("combos", [])
        self.summary = state.get("summary")
        self.stopped = state.get("stopped")
        self.elapsed_before = state.get("elapsed_s", 0.0)
        self._restored_count = state.get("proxy_count", 0)


def paired_gain(aps: list[float], base: list[float]) -> dict[str, Any]:
    """Mean paired gain over seeds, its spread, and whether it exceeds the seed noise.

    "Beyond noise" is deliberately strict: the loss wins on every seed and the mean gain is more than two
    standard errors of the paired differences.
    """
    diffs = [a - b for a, b in zip(aps, base, strict=True)]
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
    se = sd / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    beyond = len(diffs) > 1 and all(d > 0 for d in diffs) and mean > 2 * se
    return {"mean": mean, "std": sd, "diffs": diffs, "beyond_noise": bool(beyond)}
