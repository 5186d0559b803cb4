"""Fuzzing the front door: whatever text a user types, `autoloss.check` answers with verdicts or an
`ExprError` that says what is wrong, never another exception.

Three sources of text, 10,000 in all (seeded): random characters (the expression alphabet and junk),
published losses mutated character by character and token by token, and operator soups: random trees of
every branch's operators and inputs with arities, inputs and nesting broken on purpose.
"""

from __future__ import annotations

import random
import re

import pytest

import autoloss
from autoloss.errors import ExprError
from autoloss.ops import OPS
from autoloss.spaces.branches import BRANCHES
from autoloss.spaces.named import NAMED

ALPHABET = "XYZQIUEPN()(),,,0123456789.-+eE  " + "".join(sorted(OPS))[:60] + "$#@!\\'\"\t\n[]{}^*/αé"
INPUTS = sorted({name for br in BRANCHES.values() for name in br.inputs})
BRANCH_CHOICES = [None, *BRANCHES]
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[^A-Za-z_]")


def random_chars(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))


def mutated_published(rng: random.Random) -> str:
    text = rng.choice([n.text for n in NAMED.values()])
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.5:  # a character deleted, inserted or replaced
            i = rng.randrange(len(text) + 1)
            move = rng.choice(("delete", "insert", "replace"))
            if move == "delete":
                text = text[:i] + text[i + 1 :]
            elif move == "insert":
                text = text[:i] + rng.choice(ALPHABET) + text[i:]
            else:
                text = text[:i] + rng.choice(ALPHABET) + text[i + 1 :]
        else:  # a token swapped for an operator, an input or a number
            tokens = _TOKEN.findall(text)
            if tokens:
                k = rng.randrange(len(tokens))
                tokens[k] = rng.choice([*OPS, *INPUTS, "1e400", "nan", "-0", "3", "inf", "1e-400"])
                text = "".join(tokens)
    return text


def operator_soup(rng: random.Random, depth: int = 0) -> str:
    if depth > rng.randint(2, 7) or rng.random() < 0.2:
        return rng.choice([*INPUTS, "1", "2.5", "-3", "1e30", "0"])
    op = rng.choice(sorted(OPS))
    arity = OPS[op].arity + (rng.choice((-1, 1)) if rng.random() < 0.1 else 0)
    return f"{op}({','.join(operator_soup(rng, depth + 1) for _ in range(max(arity, 0)))})"


def texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    makers = (random_chars, mutated_published, operator_soup)
    out = [makers[i % 3](rng) for i in range(count)]
    out += ["Neg(" * 3000 + "X" + ")" * 3000, "Add(1e400,X)", "Add(" * 150 + "X" + ",I)" * 150]
    return out


def _try(text: str, branch: str | None, mos: bool) -> str:
    """'valid' or 'error'; anything but an ExprError with a message fails the test."""
    try:
        result = autoloss.check(text, branch, mos=mos)
    except ExprError as exc:
        assert str(exc).strip(), f"an empty error message for {text!r}"
        return "error"
    assert result.stage in ("validity", "dedup", "cpv", "mos", "passed") and result.reason, text
    return "valid"


@pytest.mark.slow
def test_ten_thousand_random_texts_never_crash_the_parser_or_the_filters():
    rng = random.Random(7)
    outcomes = {"valid": 0, "error": 0}
    for k, text in enumerate(texts(10_000, seed=0)):
        # MOS on a tenth: it costs milliseconds per candidate, and the rest already cover the parser.
        outcomes[_try(text, rng.choice(BRANCH_CHOICES), mos=k % 10 == 0)] += 1
    # The sources must reach both sides, or the fuzz tests nothing.
    assert outcomes["valid"] > 300 and outcomes["error"] > 5_000, outcomes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Neg(" * 3000 + "X" + ")" * 3000, r"nested deeper than 150 levels \(column 601\)"),
        ("Add(1e400,X)", r"number 1e400 is out of range.*\(column 5\)"),
        ("Add(X,nan)", r"'nan' is not a finite number.*\(column 7\)"),
        ("Add(X,-Infinity)", r"'-Infinity' is not a finite number.*\(column 7\)"),
        ("Add(X,$)", r"unexpected character '\$' \(column 7\)"),
    ],
)
def test_limits_and_non_finite_numbers_are_errors_that_say_so(text, message):
    with pytest.raises(ExprError, match=message):
        autoloss.check(text, "cls-sigmoid")


def test_the_limits_are_far_above_what_the_search_builds_and_can_be_raised():
    from autoloss.expr.parse import parse

    deep = "Neg(" * 149 + "X" + ")" * 149
    assert autoloss.check(deep, "cls-sigmoid", mos=False).stage == "validity"  # parsed, judged, rejected
    assert parse("Neg(" * 199 + "X" + ")" * 199, max_depth=200).depth == 200
    with pytest.raises(ExprError, match="more than 10 nodes"):
        parse("Add(Add(Add(X,X),Add(X,X)),Add(Add(X,X),Add(X,X)))", max_nodes=10)


def test_the_pointer_of_a_long_text_is_a_window_around_the_column():
    from autoloss.expr.parse import parse

    text = "Neg(" * 3000 + "X" + ")" * 3000
    with pytest.raises(ExprError) as info:
        parse(text)
    line, caret = info.value.pointer().splitlines()
    assert len(line) < 80 and line.startswith("  …") and line.endswith("…")
    # The caret stands under the token the error names: the 151st Neg opens at column 601.
    assert line[caret.index("^") :].startswith("Neg(")
    short = ExprError("x", 3, "Add(")
    assert short.pointer() == "  Add(\n    ^"
