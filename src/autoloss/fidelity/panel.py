"""The panel a fidelity measurement ranks: loss pairs that span good, ordinary and poor training.

The built-in panel for a branch holds the detector defaults, the published CSE-Autoloss pair, each named
loss with the other branch at its default, and hand-made variants that are known to train differently
(a focal loss with another focusing power, a rescaled focal — a different effective learning rate —, an
IoU-weighted positive term, a mis-weighted box loss). Filter survivors of a finished search add the kind
of candidate the search actually has to rank.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from autoloss.spaces.named import DEFAULTS, NAMED, PUBLISHED
from autoloss.transfer.plan import unique_pairs as unique

_P = "Sig(X)"
# Hand-made one-stage variants (the detector multiplies every cls-sigmoid loss by focal's alpha_t).
_SIGMOID_VARIANTS = {
    # gamma 1 instead of 2: less down-weighting of easy examples
    "focal-g1": f"Add(Mul(PY,Mul(Sub(1,{_P}),Softplus(Neg(X)))),Mul(NY,Mul({_P},Softplus(X))))",
    # focal x 3: the same function, three times the effective learning rate of the cls head
    "focal-x3": f"Mul(3,{NAMED['focal'].text})",
    # positives weighted by their IoU (varifocal-like): weak early, when predicted boxes are poor
    "iou-weighted-bce": f"Add(Mul(Q,Softplus(Neg(X))),Mul(NY,Mul(Mul({_P},{_P}),Softplus(X))))",
}
_REG_VARIANTS = {
    # GIoU at a tenth of its weight: a mis-weighted box loss, known to train poorly
    "giou-x0.1": f"Mul(0.1,{NAMED['giou'].text})",
    # the regression loss the first version's default search reported as found
    "tanh-log-reg": "Tanh(Log(Div(Sub(E,I),Div(U,Tanh(3)))))",
}
_SOFTMAX_VARIANTS = {
    "ce-x3": f"Mul(3,{NAMED['ce'].text})",
}


@dataclass(frozen=True)
class PanelEntry:
    label: str
    cls: str
    reg: str


def default_panel(cls_branch: str) -> list[PanelEntry]:
    """Defaults, the published pair, every named loss of the two branches and the variants above."""
    pub_cls, pub_reg = PUBLISHED[cls_branch]
    entries = [
        PanelEntry("default", "default", "default"),
        PanelEntry("published", NAMED[pub_cls].text, NAMED[pub_reg].text),
    ]
    cls_variants = _SIGMOID_VARIANTS if cls_branch == "cls-sigmoid" else _SOFTMAX_VARIANTS
    for n in NAMED.values():
        if n.name == DEFAULTS.get(n.branch):
            continue
        if n.branch == cls_branch:
            entries.append(PanelEntry(n.name, n.text, "default"))
        elif n.branch == "reg":
            entries.append(PanelEntry(n.name, "default", n.text))
    entries += [PanelEntry(k, v, "default") for k, v in cls_variants.items()]
    entries += [PanelEntry(k, "default", v) for k, v in _REG_VARIANTS.items()]
    if cls_branch == "cls-sigmoid":
        # Pairs, so that the panel also ranks combinations as the search's final step does.
        entries.append(PanelEntry("bce+iou", NAMED["bce"].text, NAMED["iou"].text))
        entries.append(PanelEntry("bce+tanh-log-reg", NAMED["bce"].text, _REG_VARIANTS["tanh-log-reg"]))
    return unique(entries)


def survivors_from_run(run_dir: str | Path, count: int, cls_branch: str) -> list[PanelEntry]:
    """Up to `count` filter survivors of a finished search (its events.jsonl), best MOS score first, taken
    alternately from the classification and the regression branch; the other branch at its default."""
    path = Path(run_dir) / "events.jsonl"
    if not path.is_file():
        from autoloss.fidelity.tasks import FidelityError

        raise FidelityError(f"{run_dir} has no events.jsonl: give the run directory of a search")
    by_branch: dict[str, list[tuple[float, str]]] = {cls_branch: [], "reg": []}
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of a killed run: that candidate is simply not offered
            if (
                e.get("stage") not in ("screened", "pooled", "expired", "proxy")
                or e.get("branch") not in by_branch
            ):
                continue
            if e["text"] in seen or e.get("mos_score") is None:
                continue
            seen.add(e["text"])
            by_branch[e["branch"]].append((float(e["mos_score"]), e["text"]))
    for values in by_branch.values():
        values.sort(key=lambda v: (-v[0], v[1]))
    out: list[PanelEntry] = []
    queues = [(b, list(v)) for b, v in by_branch.items()]
    while len(out) < count and any(q for _, q in queues):
        for b, q in queues:
            if q and len(out) < count:
                _, text = q.pop(0)
                label = f"survivor-{len(out) + 1}"
                out.append(
                    PanelEntry(label, text, "default") if b != "reg" else PanelEntry(label, "default", text)
                )
    return out


def panel_seeds(count: int, run_dir: str | Path | None = None) -> list[int]:
    """The seeds every pair of a panel trains with: 0 … count-1; with a search run whose survivors join the
    panel (`--from-run`), the first `count` seeds above every seed that run trained with (its rungs', which
    chose the survivors, and its final's), so no entry is scored on the draws that selected it."""
    if run_dir is None:
        return list(range(count))
    from autoloss.fidelity.tasks import FidelityError
    from autoloss.transfer.plan import TransferError, seeds_after_run

    try:
        first = seeds_after_run(run_dir)
    except TransferError as exc:
        raise FidelityError(str(exc)) from None
    return list(range(first, first + count))
