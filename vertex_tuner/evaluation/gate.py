"""The promotion gate: a small expression language, parsed and checked, never ``eval``-ed.

A gate, written in a spec as ``evaluation.promote_if``, compares metrics of the evaluated
targets, e.g. ``tuned.rouge_l >= base.rouge_l + 0.05 and tuned.exact_match >=
production.exact_match``. Grammar (lowest precedence first)::

    gate        := or
    or          := and ("or" and)*
    and         := not ("and" not)*
    not         := "not" not | significant | comparison
    significant := "significant" "(" sum ("<" | "<=" | ">" | ">=") sum ")"
    comparison  := sum [("<" | "<=" | ">" | ">=" | "==" | "!=") sum]
    sum         := product (("+" | "-") product)*
    product     := unary (("*" | "/") unary)*
    unary       := "-" unary | primary
    primary     := NUMBER | TARGET "." METRIC | "(" or ")"

NUMBER is decimal (``0.05``, ``.5``, ``1e-3``); TARGET is ``tuned``, ``base`` or
``production``; METRIC is a metric name. The parser then checks types: ``and``, ``or``, ``not``
and the gate itself take conditions (comparisons), comparisons and arithmetic take numbers.
Chained comparisons (``0 < x < 1``) are rejected: write ``0 < x and x < 1``. Nothing else is
accepted: no names besides target.metric, no attribute chains, calls, strings or indexing.
Parentheses, ``not`` and unary minus nest at most 32 deep. ``str(gate)`` is the normalised
form: single spaces, only the parentheses precedence needs, nested ``and``/``or`` flattened.

``significant`` is a word of the language only where a condition starts and only followed by
``(``; it takes one comparison of the same metric of two different targets with an optional
margin, a NUMBER added or subtracted on one side: ``A.m OP B.m``, ``A.m OP B.m + c``,
``A.m OP B.m - c``, ``A.m + c OP B.m``, ``A.m - c OP B.m``, ``A.m - B.m OP c`` (``c`` may be
``-c`` there) or ``c OP A.m - B.m``, with OP one of ``< <= > >=``. Its normal form is
``significant(A.m OP B.m + c)``: the targets in the order written, the margin on the right.

Evaluation (fail closed):

- A comparison that needs ``production`` when no production model was evaluated (before the
  first promotion) is **skipped**: it drops out of its ``and`` / ``or`` as if it were not
  written, and ``not`` of a skipped condition is skipped. So ``tuned.x >= production.x and
  tuned.x > base.x`` lets the first model through on its comparison with base, and
  ``tuned.x > production.x or tuned.y > base.y`` does not pass on the skipped half alone.
  Only ``production`` may be missing: a comparison that needs ``tuned`` or ``base`` when that
  target was not evaluated fails the gate.
- A gate passes only if at least one comparison was evaluated: a gate whose comparisons were
  all skipped **fails** ("no comparison was evaluated"). Write a comparison with base next to
  the production ones to let a first model through.
- A comparison that needs a metric the evaluated target has no value for (e.g. it could score
  no example), or that divides by zero, **fails the gate**, whatever ``not`` or ``or`` surround
  it: a gate never passes on a number that does not exist.
- Every comparison is evaluated (no short-circuit), so the verdict lists each with its numbers.
- A plain comparison compares the targets' metric values (means over the held-out examples).
  ``significant(...)`` judges the paired per-example differences instead (below), and fails
  the gate when they were not provided to :meth:`Gate.evaluate`, or do not cover its metric.

How ``significant()`` decides:

``significant(tuned.m > base.m + c)`` holds when the confidence interval of the mean
per-example difference ``tuned.m - base.m`` lies entirely above the margin ``c`` (``>``: its
lower bound above ``c``; ``>=``: at or above it); with ``<`` / ``<=`` its upper bound must be
below (at or below) ``c``. The differences are those of the held-out examples both targets
scored, and the interval is a paired percentile bootstrap computed by
:func:`vertex_tuner.evaluation.statistics.compare_all`: the examples are resampled with
replacement ``B`` times (9999 by default, from a fixed seed, so the same results give the same
verdict) and the mean difference of each resample is kept. With those means sorted, the
interval at confidence ``1 - 2α`` runs from the ``j``-th to the ``(B + 1 - j)``-th, ``j =
floor(α (B + 1))``: at 95 % and 9999 resamples, from the 250th to the 9750th.

Each clause is also a one-sided test, with the bootstrap p-value ``p = (k + 1) / (B + 1)``
where ``k`` counts the resampled means on the wrong side of the margin (at or below it for
``>``, below it for ``>=``, at or above it for ``<``, above it for ``<=``). The interval clears
the margin exactly when ``p <= α``, with ``α = (1 - confidence) / 2``: 0.025 at the default
confidence of 0.95 (``Gate.evaluate(..., confidence=...)`` changes it). Two rules come on top:

- ``p`` is never taken below ``2 ** -n`` for ``n`` examples, the smallest p-value an exact
  sign-flip test on ``n`` examples can give: the bootstrap of a handful of examples is not
  allowed to be surer than that. So 5 examples can never be significant at 95 % (1/32 >
  0.025), even when every difference is the same (an interval of zero width); 6 can.
- Several ``significant`` clauses in one gate are corrected with Holm's step-down procedure,
  so that the chance that any of them holds by luck stays at most ``α``. The ``m`` clauses
  that were judged are sorted by ``p``; the first is tested at ``α / m``, the second at
  ``α / (m - 1)``, ..., the last at ``α``, and the procedure stops at the first that fails:
  every clause after it fails too. A clause at step ``r`` is thus judged with (and shows) the
  interval at confidence ``1 - 2α / (m - r + 1)``: 97.5 % and then 95 % for two clauses. Its
  ``p_value`` is Holm's adjusted p-value, the largest ``min(1, (m - s + 1) p(s))`` over the
  steps ``s <= r``, and the clause holds exactly when that is at most ``α``. Clauses skipped
  because no production model was evaluated do not count in ``m``.

A plain comparison (``tuned.m >= base.m + c``) keeps comparing the two means. A clause that
does not hold says why in its note: the observed difference does not clear the margin at all
(more examples would not help), too few examples for the sign-flip bound, or an interval too
wide for the number of held-out examples. It then estimates the examples needed: ``((z(1 -
α_r) + z(0.8)) · s / (delta - c))²`` with ``s`` the standard deviation of the paired
differences, ``delta`` their mean and ``α_r`` the clause's own level, a normal approximation
with 80 % power that assumes the difference and its spread stay as observed, and never fewer
than the sign-flip bound allows.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import operator
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from vertex_tuner.evaluation.metrics import METRICS
from vertex_tuner.evaluation.statistics import Comparison, examples_needed, holm, pair_key
from vertex_tuner.vocabulary import TARGETS

KEYWORDS = ("and", "or", "not")
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
#: The comparisons ``significant(...)`` takes: a difference is tested one way.
ONE_SIDED = ("<", "<=", ">", ">=")
SIGNIFICANT = "significant"
#: Targets whose absence skips a comparison instead of failing it: before the first promotion
#: there is no production model.
SKIPPABLE = frozenset({"production"})
#: The default confidence of ``significant(...)``.
CONFIDENCE = 0.95
_MIRROR = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
#: How deeply parentheses and unary minus may nest: deep enough for any real gate, shallow
#: enough that the recursive parser stays far from Python's recursion limit.
MAX_DEPTH = 32

_TOKEN = re.compile(
    r"(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\)|\.)",
    re.ASCII,
)
_SPACE = re.compile(r"\s+")
_BAD = {
    "'": "strings are not allowed",
    '"': "strings are not allowed",
    "=": "'=' is not a comparison; write '=='",
    "!": "write 'not' instead of '!'",
    "&": "write 'and' instead of '&'",
    "|": "write 'or' instead of '|'",
    "[": "indexing is not allowed; a reference is target.metric",
    ",": "',' is not allowed; functions and lists are not part of the gate language",
}


class GateSyntaxError(ValueError):
    """A gate that cannot be parsed; ``column`` (1-based) is where the problem is."""

    def __init__(self, message: str, column: int, text: str = "") -> None:
        self.reason = message
        self.column = column
        self.text = text
        # Whitespace shown as spaces, so that the caret stays under its column even when the
        # gate was written over several lines in YAML.
        shown = "".join(" " if c.isspace() else c for c in text)
        caret = " " * (column - 1) + "^"
        super().__init__(f"{message} at column {column}\n  {shown}\n  {caret}")


@dataclass(frozen=True)
class _Tok:
    kind: str  # "num", "name", "op" or "end"
    value: str
    column: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while True:
        space = _SPACE.match(text, pos)
        if space is not None:
            pos = space.end()
        if pos >= len(text):
            break
        match = _TOKEN.match(text, pos)
        if match is None:
            char = text[pos]
            pair = text[pos : pos + 2]
            message = {"&&": "write 'and' instead of '&&'", "||": "write 'or' instead of '||'"}
            raise GateSyntaxError(
                message.get(pair) or _BAD.get(char) or f"unexpected character {char!r}",
                pos + 1,
                text,
            )
        kind = match.lastgroup or ""
        tokens.append(_Tok(kind, match.group(), pos + 1))
        pos = match.end()
    tokens.append(_Tok("end", "", len(text) + 1))
    return tokens


# --- the tree -------------------------------------------------------------------------------------
#
# Nodes compare by structure only: their column (for error messages) is left out, so a gate
# and its normalised form are equal.

_OR, _AND, _NOT, _COMPARE, _SUM, _PRODUCT, _UNARY, _ATOM = range(8)


@dataclass(frozen=True)
class Num:
    value: float
    column: int = field(default=0, compare=False)

    def __str__(self) -> str:
        if self.value.is_integer() and abs(self.value) < 1e15:
            return str(int(self.value))
        return repr(self.value)


@dataclass(frozen=True)
class Ref:
    target: str
    metric: str
    column: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"{self.target}.{self.metric}"


@dataclass(frozen=True)
class Neg:
    operand: Value
    column: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return "-" + _wrap(self.operand, _UNARY)


@dataclass(frozen=True)
class BinOp:
    """Arithmetic: ``+ - * /``."""

    op: str
    left: Value
    right: Value
    column: int = field(default=0, compare=False)

    def __str__(self) -> str:
        level = _precedence(self)
        # Left-associative: the right operand needs parentheses at the same level too.
        return f"{_wrap(self.left, level)} {self.op} {_wrap(self.right, level + 1)}"


@dataclass(frozen=True)
class Compare:
    op: str
    left: Value
    right: Value
    column: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"{_wrap(self.left, _SUM)} {self.op} {_wrap(self.right, _SUM)}"


@dataclass(frozen=True)
class Logic:
    """``and`` / ``or`` over two or more conditions."""

    op: str
    items: tuple[Cond, ...]
    column: int = field(default=0, compare=False)

    def __str__(self) -> str:
        level = _precedence(self)
        return f" {self.op} ".join(_wrap(item, level + 1) for item in self.items)


@dataclass(frozen=True)
class Not:
    operand: Cond
    column: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return "not " + _wrap(self.operand, _NOT)


@dataclass(frozen=True)
class Significant:
    """``significant(left OP right + margin)``: the paired per-example differences
    ``left - right`` are beyond ``margin`` with confidence."""

    op: str
    left: Ref
    right: Ref
    margin: float = 0.0
    column: int = field(default=0, compare=False)

    @property
    def metric(self) -> str:
        return self.left.metric

    def __str__(self) -> str:
        inner = f"{self.left} {self.op} {self.right}"
        if self.margin > 0:
            inner += f" + {Num(self.margin)}"
        elif self.margin < 0:
            inner += f" - {Num(-self.margin)}"
        return f"{SIGNIFICANT}({inner})"


Value = Num | Ref | Neg | BinOp
Cond = Compare | Logic | Not | Significant
Node = Value | Cond


def _precedence(node: Node) -> int:
    if isinstance(node, Logic):
        return _OR if node.op == "or" else _AND
    if isinstance(node, Not):
        return _NOT
    if isinstance(node, Compare):
        return _COMPARE
    if isinstance(node, BinOp):
        return _SUM if node.op in "+-" else _PRODUCT
    if isinstance(node, Neg):
        return _UNARY
    return _ATOM


def _wrap(node: Node, level: int) -> str:
    """The node's text, in parentheses when it binds more loosely than ``level`` needs."""
    return f"({node})" if _precedence(node) < level else str(node)


def _walk(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node, Logic):
        for item in node.items:
            yield from _walk(item)
    elif isinstance(node, (Not, Neg)):
        yield from _walk(node.operand)
    elif isinstance(node, (Compare, BinOp, Significant)):
        yield from _walk(node.left)
        yield from _walk(node.right)


# --- the parser ---------------------------------------------------------------------------------


def _is_condition(node: Node) -> bool:
    return isinstance(node, (Compare, Logic, Not, Significant))


_MARGIN_HELP = "e.g. significant(tuned.rouge_l >= base.rouge_l + 0.02)"


class _Parser:
    def __init__(self, text: str, metrics: Collection[str]) -> None:
        self.text = text
        self.metrics = metrics
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        if tok.kind != "end":
            self.i += 1
        return tok

    def no_chain(self) -> None:
        """Refuse ``0 < x < 1``: the next token after a comparison must not compare again."""
        after = self.peek()
        if after.value in COMPARISONS:
            raise self.fail(
                "chained comparisons are not supported; join two comparisons with 'and'",
                after.column,
            )

    def fail(self, message: str, column: int) -> GateSyntaxError:
        return GateSyntaxError(message, column, self.text)

    def describe(self, tok: _Tok) -> str:
        return "the end of the gate" if tok.kind == "end" else repr(tok.value)

    def nest(self, column: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"the gate nests deeper than {MAX_DEPTH} levels", column)

    # Type checks happen right after an operand is parsed, while the parser still looks at the
    # token that follows it: that is where a missing comparison operator belongs.

    def condition(self, node: Node) -> Cond:
        if _is_condition(node):
            return node  # type: ignore[return-value]
        tok = self.peek()
        raise self.fail(
            f"expected a comparison (<, <=, >, >=, ==, !=) after {node}, "
            f"found {self.describe(tok)}",
            tok.column,
        )

    def value(self, node: Node) -> Value:
        if not _is_condition(node):
            return node  # type: ignore[return-value]
        raise self.fail(
            "a condition cannot be used as a number; compare numbers, then combine the "
            "comparisons with and/or",
            node.column,
        )

    def parse(self) -> Cond:
        if self.peek().kind == "end":
            raise self.fail(
                "the gate is empty; write a condition such as tuned.rouge_l >= base.rouge_l", 1
            )
        node = self.condition(self.or_())
        tok = self.peek()
        if tok.kind != "end":
            if tok.value == ")":
                raise self.fail("unmatched ')'", tok.column)
            raise self.fail(
                f"unexpected {self.describe(tok)}; join conditions with and/or", tok.column
            )
        return node

    def logic(self, op: str, operand: Any) -> Node:
        first = operand()
        if self.peek().value != op:
            return first  # type: ignore[no-any-return]
        items: list[Cond] = []
        node = first
        while True:
            cond = self.condition(node)
            # A parenthesised "a and b" inside an "and" is the same "and": keep it flat.
            if isinstance(cond, Logic) and cond.op == op:
                items.extend(cond.items)
            else:
                items.append(cond)
            if self.peek().value != op:
                break
            self.take()
            node = operand()
        return Logic(op, tuple(items), first.column)

    def or_(self) -> Node:
        return self.logic("or", self.and_)

    def and_(self) -> Node:
        return self.logic("and", self.not_)

    def not_(self) -> Node:
        tok = self.peek()
        if tok.value != "not":
            if self.at_significant():
                return self.significant()
            return self.comparison()
        self.take()
        self.nest(tok.column)
        operand = self.condition(self.not_())
        self.depth -= 1
        return Not(operand, tok.column)

    def at_significant(self) -> bool:
        tok = self.peek()
        return (
            tok.kind == "name" and tok.value == SIGNIFICANT and self.tokens[self.i + 1].value == "("
        )

    def significant(self) -> Significant:
        name = self.take()
        opening = self.take()
        self.nest(name.column)
        start = self.peek()
        if start.value == "not":
            raise self.fail(
                "significant(...) takes one comparison, not a negation; write not significant(...)",
                start.column,
            )
        if start.kind == "end" or start.value == ")":
            raise self.fail(
                f"significant(...) needs a comparison of two targets, {_MARGIN_HELP}", start.column
            )
        left = self.sum_()
        tok = self.peek()
        if tok.value not in COMPARISONS:
            if _is_condition(left):
                raise self.fail(
                    "significant(...) takes one comparison, without parentheses around it",
                    left.column,
                )
            raise self.fail(
                f"expected <, <=, > or >= inside significant(...), found {self.describe(tok)}",
                tok.column,
            )
        left_value = self.value(left)
        if tok.value not in ONE_SIDED:
            raise self.fail(
                f"significant(...) tests a difference one way: use <, <=, > or >=, not {tok.value}",
                tok.column,
            )
        self.take()
        right = self.value(self.sum_())
        self.no_chain()
        after = self.peek()
        if after.value in ("and", "or"):
            raise self.fail(
                "significant(...) takes one comparison; write significant(...) "
                f"{after.value} significant(...)",
                after.column,
            )
        if after.value != ")":
            raise self.fail(
                f"expected ')' to close the 'significant(' at column {opening.column}, "
                f"found {self.describe(after)}",
                after.column,
            )
        self.take()
        self.depth -= 1
        node = self.significant_form(tok.value, left_value, right, name.column)
        follow = self.peek()
        if follow.value in (*COMPARISONS, "+", "-", "*", "/"):
            raise self.fail(
                "significant(...) is a condition, not a number; put the margin inside it, "
                + _MARGIN_HELP,
                follow.column,
            )
        return node

    def significant_form(self, op: str, left: Value, right: Value, column: int) -> Significant:
        """``left OP right`` as ``A.m OP B.m + margin``, or the error that says what to write."""
        if isinstance(left, Num | Neg) or (
            isinstance(right, BinOp) and isinstance(right.right, Ref)
        ):
            # "c OP A - B" (or a number first): read it as "A - B OP' c".
            left, right, op = right, left, _MIRROR[op]
        first, subtracted, left_constant = self.margin_side(left)
        second, _, right_constant = self.margin_side(right, difference=False)
        if subtracted is not None:
            if second is not None:
                raise self.fail(
                    "significant(...) compares two targets: a difference on one side leaves "
                    f"only a number for the other, {_MARGIN_HELP}",
                    right.column,
                )
            second = subtracted
        if first is None or second is None:
            raise self.fail(
                "significant(...) compares one metric of two targets, such as "
                "tuned.rouge_l > base.rouge_l; a comparison with a fixed number needs no "
                "significant()",
                column,
            )
        if left_constant is not None and right_constant is not None:
            raise self.fail(
                f"write the margin of significant(...) on one side only, {_MARGIN_HELP}",
                right.column,
            )
        if second.metric != first.metric:
            raise self.fail(
                "significant(...) compares the same metric of two targets, not "
                f"{first.metric} with {second.metric}",
                second.column,
            )
        if second.target == first.target:
            raise self.fail(
                f"significant(...) compares two different targets; both sides read {first.target}",
                second.column,
            )
        # "A + c OP B" is "A - B OP -c".
        margin = -left_constant if left_constant is not None else (right_constant or 0.0)
        return Significant(op, first, second, margin, column)

    def margin_side(
        self, node: Value, *, difference: bool = True
    ) -> tuple[Ref | None, Ref | None, float | None]:
        """One side of a significant comparison: (its reference, the reference it subtracts
        when it is a difference ``A.m - B.m``, its signed constant)."""
        if isinstance(node, Ref):
            return node, None, None
        if isinstance(node, Num):
            return None, None, node.value
        if isinstance(node, Neg) and isinstance(node.operand, Num):
            return None, None, -node.operand.value
        if isinstance(node, BinOp) and node.op in "+-":
            sign = 1.0 if node.op == "+" else -1.0
            if isinstance(node.left, Ref) and isinstance(node.right, Num):
                return node.left, None, sign * node.right.value
            if node.op == "+" and isinstance(node.left, Num) and isinstance(node.right, Ref):
                return node.right, None, node.left.value
            if (
                difference
                and node.op == "-"
                and isinstance(node.left, Ref)
                and isinstance(node.right, Ref)
            ):
                return node.left, node.right, None
        if isinstance(node, BinOp) and node.op in "*/":
            raise self.fail(
                "inside significant(...) a margin is added or subtracted; products and "
                f"quotients are not supported, {_MARGIN_HELP}",
                node.column,
            )
        raise self.fail(
            "inside significant(...) each side is target.metric, optionally plus or minus a "
            f"number, {_MARGIN_HELP}",
            node.column,
        )

    def comparison(self) -> Node:
        left = self.sum_()
        tok = self.peek()
        if tok.value not in COMPARISONS:
            return left
        self.value(left)
        self.take()
        right = self.value(self.sum_())
        self.no_chain()
        return Compare(tok.value, left, right, left.column)  # type: ignore[arg-type]

    def arithmetic(self, ops: tuple[str, str], operand: Callable[[], Node]) -> Node:
        """Left-associative ``operand (op operand)*`` for one precedence level."""
        node = operand()
        while self.peek().value in ops:
            op = self.take().value
            left = self.value(node)
            node = BinOp(op, left, self.value(operand()), left.column)
        return node

    def sum_(self) -> Node:
        return self.arithmetic(("+", "-"), self.product)

    def product(self) -> Node:
        return self.arithmetic(("*", "/"), self.unary)

    def unary(self) -> Node:
        tok = self.peek()
        if tok.value != "-":
            return self.primary()
        self.take()
        self.nest(tok.column)
        operand = self.value(self.unary())
        self.depth -= 1
        return Neg(operand, tok.column)

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "num":
            number = float(tok.value)
            if not math.isfinite(number):
                raise self.fail(f"the number {tok.value} is out of range", tok.column)
            return Num(number, tok.column)
        if tok.value == "(":
            self.nest(tok.column)
            inner = self.or_()
            close = self.take()
            if close.value != ")":
                raise self.fail(
                    f"expected ')' to close the '(' at column {tok.column}, "
                    f"found {self.describe(close)}",
                    close.column,
                )
            self.depth -= 1
            # Keep the column of the parenthesis, so errors about the group point at it.
            return _at(inner, tok.column)
        if tok.kind == "name":
            return self.reference(tok)
        if tok.kind == "end":
            raise self.fail(
                "the gate ends too early; expected a number or target.metric", tok.column
            )
        raise self.fail(
            f"unexpected {self.describe(tok)}; expected a number or target.metric", tok.column
        )

    def reference(self, tok: _Tok) -> Ref:
        if self.peek().value == "(":
            if tok.value == SIGNIFICANT:
                raise self.fail(
                    "significant(...) is a condition, not a number; put the margin inside it, "
                    + _MARGIN_HELP,
                    tok.column,
                )
            raise self.fail(f"function calls such as {tok.value}(...) are not allowed", tok.column)
        if tok.value in KEYWORDS:
            raise self.fail(f"expected a number or target.metric before '{tok.value}'", tok.column)
        if tok.value not in TARGETS:
            close = difflib.get_close_matches(tok.value, TARGETS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise self.fail(
                f"unknown target {tok.value!r}; {hint}targets are tuned, base and production",
                tok.column,
            )
        dot = self.peek()
        if dot.value != ".":
            raise self.fail(
                f"expected '.' and a metric after {tok.value!r} (e.g. {tok.value}.rouge_l)",
                dot.column,
            )
        self.take()
        metric = self.take()
        if metric.kind != "name":
            raise self.fail(
                f"expected a metric name after '{tok.value}.', found {self.describe(metric)}",
                metric.column,
            )
        if metric.value not in self.metrics:
            raise self.fail(self.unknown_metric(metric.value), metric.column)
        after = self.peek()
        if after.value == ".":
            raise self.fail(
                "attribute chains are not allowed; a reference is target.metric", after.column
            )
        if after.value == "(":
            raise self.fail("calls are not allowed; a reference is target.metric", after.column)
        return Ref(tok.value, metric.value, tok.column)

    def unknown_metric(self, name: str) -> str:
        known = list(self.metrics)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        if name in METRICS:
            return (
                f"metric {name!r} is not evaluated; add it to evaluation.metrics "
                f"(now: {', '.join(known)})"
            )
        return f"unknown metric {name!r}; {hint}known metrics: {', '.join(known)}"


def _at(node: Node, column: int) -> Node:
    """The same node, reporting errors at ``column``."""
    return dataclasses.replace(node, column=column)


# --- evaluation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClauseResult:
    """One comparison of the gate, as judged."""

    #: The comparison, normalised (``tuned.rouge_l >= base.rouge_l + 0.05``).
    text: str
    #: True or False; None when it was skipped because a target was not evaluated.
    passed: bool | None
    #: Its two sides' values; None when they could not be computed. For a significant clause:
    #: the mean paired difference and the margin.
    left: float | None
    right: float | None
    #: Why it was skipped or could not be computed; for a significant clause, its interval in
    #: words and, when it failed, why; empty otherwise.
    note: str = ""
    #: True for a ``significant(...)`` clause; the fields below are set only for one that was
    #: judged.
    significant: bool = False
    #: The interval of the difference it was judged with, at ``confidence`` (Holm-adjusted).
    ci_low: float | None = None
    ci_high: float | None = None
    #: How many examples both targets scored.
    n: int | None = None
    margin: float | None = None
    confidence: float | None = None
    #: Holm's adjusted one-sided p-value; the clause holds when it is at most
    #: ``(1 - confidence of the gate) / 2``.
    p_value: float | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "text": self.text,
            "passed": self.passed,
            "left": self.left,
            "right": self.right,
            "note": self.note,
        }
        if self.significant:
            doc.update(
                significant=True,
                ci_low=self.ci_low,
                ci_high=self.ci_high,
                n=self.n,
                margin=self.margin,
                confidence=self.confidence,
                p_value=self.p_value,
            )
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ClauseResult:
        """Read back :meth:`to_json`, and older documents without the newer keys."""

        def number(key: str) -> float | None:
            value = doc.get(key)
            return None if value is None else float(value)

        n = doc.get("n")
        return cls(
            doc["text"],
            doc["passed"],
            doc["left"],
            doc["right"],
            doc.get("note", ""),
            significant=bool(doc.get("significant", False)),
            ci_low=number("ci_low"),
            ci_high=number("ci_high"),
            n=None if n is None else int(n),
            margin=number("margin"),
            confidence=number("confidence"),
            p_value=number("p_value"),
        )


@dataclass(frozen=True)
class GateVerdict:
    """Whether the gate passed, every comparison with its numbers, and a one-line reason."""

    passed: bool
    clauses: list[ClauseResult]
    explanation: str

    @property
    def skipped(self) -> list[ClauseResult]:
        return [c for c in self.clauses if c.passed is None]

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "explanation": self.explanation,
            "clauses": [c.to_json() for c in self.clauses],
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> GateVerdict:
        return cls(
            passed=bool(doc["passed"]),
            clauses=[ClauseResult.from_json(c) for c in doc.get("clauses", [])],
            explanation=str(doc.get("explanation", "")),
        )


class _NoValue(Exception):
    """A value cannot be computed: a metric without a value, or a division by zero."""


def fmt(value: float) -> str:
    """A number as the verdict shows it: four significant digits."""
    return f"{value:.4g}"


def _tidy(value: float) -> float:
    # Twelve significant digits hide binary noise (0.1 + 0.2) in the stored verdict.
    return float(f"{value:.12g}")


def _percent(confidence: float) -> str:
    return f"{100 * confidence:.4g}%"


@dataclass(frozen=True)
class _Outcome:
    """A significant clause, as judged before the walk over the tree records it."""

    clause: ClauseResult
    #: How the explanation cites it.
    reason: str
    #: True when it could not be judged: it fails the gate.
    broken: bool = False


@dataclass(frozen=True)
class _Tested:
    node: Significant
    #: The comparison oriented as the clause reads it: ``left - right``.
    comparison: Comparison
    p: float


class _Judge:
    def __init__(
        self,
        values: Mapping[str, Mapping[str, float]],
        comparisons: Mapping[str, Mapping[str, Comparison]] | None = None,
        confidence: float = CONFIDENCE,
    ) -> None:
        self.values = values
        self.comparisons = comparisons
        self.confidence = confidence
        self.clauses: list[ClauseResult] = []
        #: Per comparison node (by identity): its result and the reason to give for it.
        self.results: dict[int, bool | None] = {}
        self.reasons: dict[int, str] = {}
        #: Why comparisons could not be judged; any of them fails the gate.
        self.broken: list[str] = []
        #: Per significant node (by identity): its outcome, judged together (Holm).
        self.outcomes: dict[int, _Outcome] = {}

    def value(self, node: Value) -> float:
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Ref):
            metrics = self.values.get(node.target)
            if metrics is None:
                raise _NoValue(f"no {node.target} model")
            value = metrics.get(node.metric)
            if value is None or not math.isfinite(value):
                raise _NoValue(f"{node} has no value")
            return float(value)
        if isinstance(node, Neg):
            return -self.value(node.operand)
        left, right = self.value(node.left), self.value(node.right)
        if node.op == "+":
            return left + right
        if node.op == "-":
            return left - right
        if node.op == "*":
            return left * right
        if right == 0:
            raise _NoValue(f"division by zero in {node}")
        return left / right

    def finite(self, node: Value) -> float:
        value = self.value(node)
        if not math.isfinite(value):
            raise _NoValue(f"{node} is not a finite number")
        return value

    def refs(self, node: Compare) -> str:
        """The values the comparison read, for the explanation."""
        parts = []
        for ref in dict.fromkeys(n for n in _walk(node) if isinstance(n, Ref)):
            value = self.values.get(ref.target, {}).get(ref.metric)
            if value is not None:
                parts.append(f"{ref} = {fmt(value)}")
        return ", ".join(parts)

    def absent(self, node: Compare | Significant) -> tuple[list[str], list[str]]:
        """The targets the node reads that were not evaluated: (those that fail it, those that
        skip it)."""
        targets = dict.fromkeys(n.target for n in _walk(node) if isinstance(n, Ref))
        missing = [t for t in targets if t not in self.values]
        return [t for t in missing if t not in SKIPPABLE], [t for t in missing if t in SKIPPABLE]

    def run(self, node: Cond) -> bool | None:
        result: bool | None
        if isinstance(node, Compare):
            result = self.compare(node)
        elif isinstance(node, Significant):
            result = self.record(node)
        elif isinstance(node, Not):
            inner = self.run(node.operand)
            result = None if inner is None else not inner
        else:
            # Every item, even after the outcome is known: the report lists them all.
            judged = [r for r in (self.run(item) for item in node.items) if r is not None]
            combine = all if node.op == "and" else any
            result = combine(judged) if judged else None
        self.results[id(node)] = result
        return result

    def skip(self, text: str, targets: list[str], *, significant: bool = False) -> None:
        note = f"no {targets[0]} model"
        self.clauses.append(
            ClauseResult(text, None, None, None, f"skipped: {note}", significant=significant)
        )

    def compare(self, node: Compare) -> bool | None:
        text = str(node)
        failing, skipping = self.absent(node)
        try:
            if failing:
                raise _NoValue(
                    f"no {failing[0]} model (only comparisons with production may be skipped)"
                )
            if skipping:
                self.skip(text, skipping)
                self.reasons[id(node)] = f"{text} (skipped: no {skipping[0]} model)"
                return None
            left, right = self.finite(node.left), self.finite(node.right)
        except _NoValue as missing:
            self.clauses.append(ClauseResult(text, False, None, None, str(missing)))
            self.reasons[id(node)] = f"{text} cannot be judged: {missing}"
            self.broken.append(self.reasons[id(node)])
            return False
        passed = _OPERATORS[node.op](left, right)
        self.clauses.append(ClauseResult(text, passed, _tidy(left), _tidy(right)))
        state = "holds" if passed else "is false"
        refs = self.refs(node)
        self.reasons[id(node)] = (
            f"{text} {state} ({fmt(left)} vs {fmt(right)}{'; ' + refs if refs else ''})"
        )
        return passed

    # --- significant(...) ---------------------------------------------------------------------

    def record(self, node: Significant) -> bool | None:
        outcome = self.outcomes[id(node)]
        self.clauses.append(outcome.clause)
        self.reasons[id(node)] = outcome.reason
        if outcome.broken:
            self.broken.append(outcome.reason)
        return outcome.clause.passed

    def cannot_judge(self, node: Significant, why: str) -> None:
        text = str(node)
        self.outcomes[id(node)] = _Outcome(
            ClauseResult(text, False, None, None, why, significant=True),
            f"{text} cannot be judged: {why}",
            broken=True,
        )

    def lookup(self, node: Significant) -> Comparison | str:
        """The comparison ``left - right`` for the node's metric, or why there is none."""
        a, b = node.left.target, node.right.target
        if self.comparisons is None:
            return (
                "significant() needs the paired per-example comparisons of the evaluation "
                "(compare_all); none were given"
            )
        found = self.comparisons.get(pair_key(a, b))
        if found is not None and node.metric in found:
            return found[node.metric]
        found = self.comparisons.get(pair_key(b, a))
        if found is not None and node.metric in found:
            return found[node.metric].reversed()
        if pair_key(a, b) in self.comparisons or pair_key(b, a) in self.comparisons:
            return f"no example has both a {a} and a {b} score for {node.metric}"
        return f"no paired comparison of {a} and {b} was given"

    def prepare(self, tree: Cond) -> None:
        """Judge every significant clause of the tree, together: Holm's step-down needs all
        their p-values at once."""
        tested: list[_Tested] = []
        for node in _walk(tree):
            if not isinstance(node, Significant):
                continue
            text = str(node)
            failing, skipping = self.absent(node)
            if failing:
                self.cannot_judge(
                    node, f"no {failing[0]} model (only comparisons with production may be skipped)"
                )
                continue
            if skipping:
                note = f"no {skipping[0]} model"
                self.outcomes[id(node)] = _Outcome(
                    ClauseResult(text, None, None, None, f"skipped: {note}", significant=True),
                    f"{text} (skipped: {note})",
                )
                continue
            found = self.lookup(node)
            if isinstance(found, str):
                self.cannot_judge(node, found)
                continue
            try:
                p = found.p_value_against(node.op, node.margin)
            except ValueError as exc:
                self.cannot_judge(node, str(exc))
                continue
            tested.append(_Tested(node, found, p))
        if not tested:
            return
        alpha = (1 - self.confidence) / 2
        adjusted = holm([t.p for t in tested])
        order = sorted(range(len(tested)), key=lambda i: tested[i].p)
        rank = {i: r for r, i in enumerate(order)}
        m = len(tested)
        # Holm's steps stop at the first clause (by p) that does not hold.
        stop = next((tested[i] for i in order if adjusted[i] > alpha), None)
        for i, test in enumerate(tested):
            level = alpha / (m - rank[i])
            self.outcomes[id(test.node)] = self.significance(
                test, adjusted[i], adjusted[i] <= alpha, level, m, stop
            )

    def significance(
        self,
        test: _Tested,
        adjusted: float,
        passed: bool,
        level: float,
        m: int,
        stop: _Tested | None,
    ) -> _Outcome:
        node, comparison = test.node, test.comparison
        text = str(node)
        confidence = 1 - 2 * level
        low, high = comparison.interval(confidence)
        above = node.op in (">", ">=")
        side = "above" if above else "below"
        if node.op in (">=", "<="):
            side = "at or " + side
        difference = f"{node.left} - {node.right}"
        holm_note = f", Holm-adjusted for {m} significant clauses" if m > 1 else ""
        interval = (
            f"the {_percent(confidence)} interval of {difference} is "
            f"[{fmt(low)}, {fmt(high)}] (n = {comparison.n}{holm_note})"
        )
        margin = fmt(node.margin)
        if passed:
            note = f"{interval}, {side} {margin}"
        else:
            note = self.why_not(test, level, interval, side, margin, stop)
        clause = ClauseResult(
            text,
            passed,
            _tidy(comparison.delta),
            _tidy(node.margin),
            note,
            significant=True,
            ci_low=_tidy(low),
            ci_high=_tidy(high),
            n=comparison.n,
            margin=_tidy(node.margin),
            confidence=_tidy(confidence),
            p_value=_tidy(adjusted),
        )
        return _Outcome(clause, f"{text} {'holds' if passed else 'is false'} ({note})")

    def why_not(
        self,
        test: _Tested,
        level: float,
        interval: str,
        side: str,
        margin: str,
        stop: _Tested | None,
    ) -> str:
        node, comparison = test.node, test.comparison
        if test.p <= level and stop is not None:
            return (
                f"{interval}, {side} {margin}, but Holm's correction stops at {stop.node}, "
                "which does not hold"
            )
        above = node.op in (">", ">=")
        gap = comparison.delta - node.margin if above else node.margin - comparison.delta
        observed = f"{node.left} - {node.right} = {fmt(comparison.delta)}"
        if gap <= 0:
            return (
                f"the observed {observed} is not {'above' if above else 'below'} {margin}; "
                f"more examples would not show it ({interval})"
            )
        n = comparison.n
        needed = examples_needed(comparison.std or 0.0, gap, level)
        needed = max(needed, n + 1)
        if 2.0**-n > level:
            return (
                f"{n} examples are too few: even if all agreed, the smallest p-value would be "
                f"2^-{n} = {fmt(2.0**-n)}, above {fmt(level)}; at least {needed} examples are "
                f"needed ({interval})"
            )
        if not comparison.std:
            return f"{interval}, not {side} {margin}; at least {needed} examples are needed"
        return (
            f"not significant: {interval}, not entirely {side} {margin}; about {needed} "
            "examples would be needed to show it (normal approximation with 80% power, if "
            f"the difference stays {fmt(comparison.delta)} and its spread "
            f"{fmt(comparison.std)})"
        )

    def why(self, node: Cond) -> list[str]:
        """The comparisons that gave ``node`` its result."""
        result = self.results[id(node)]
        if isinstance(node, (Compare, Significant)):
            return [self.reasons[id(node)]]
        if isinstance(node, Not):
            return self.why(node.operand)
        # A failed "and" is explained by its false items, a passed "or" by its true ones; in
        # the other two cases every judged item agrees with the result. Skipped items are
        # listed apart.
        return [
            reason
            for item in node.items
            if self.results[id(item)] == result
            for reason in self.why(item)
        ]


_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class Gate:
    """A parsed, checked gate. ``str(gate)`` is its normalised form."""

    tree: Cond
    #: The text it was parsed from.
    text: str = field(default="", compare=False)

    def __str__(self) -> str:
        return str(self.tree)

    @property
    def references(self) -> frozenset[tuple[str, str]]:
        """Every (target, metric) the gate reads."""
        return frozenset((n.target, n.metric) for n in _walk(self.tree) if isinstance(n, Ref))

    @property
    def targets(self) -> frozenset[str]:
        return frozenset(target for target, _ in self.references)

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(metric for _, metric in self.references)

    @property
    def significant_comparisons(self) -> frozenset[tuple[str, str, str]]:
        """(a, b, metric) of every ``significant(...)`` clause, ``a`` before ``b`` in the order
        of TARGETS: what :func:`~vertex_tuner.evaluation.statistics.compare_all` must compute
        (its ``pairs``, under the key ``"a-b"``) for :meth:`evaluate`."""
        found = set()
        for node in _walk(self.tree):
            if isinstance(node, Significant):
                a, b = sorted((node.left.target, node.right.target), key=TARGETS.index)
                found.add((a, b, node.metric))
        return frozenset(found)

    def evaluate(
        self,
        values: Mapping[str, Mapping[str, float]],
        comparisons: Mapping[str, Mapping[str, Comparison]] | None = None,
        *,
        confidence: float = CONFIDENCE,
    ) -> GateVerdict:
        """Judge the gate on metric values per target (a target that was not evaluated is
        absent from ``values``).

        ``comparisons`` (what :func:`~vertex_tuner.evaluation.statistics.compare_all` returns:
        ``"a-b"`` to metric to comparison) are what ``significant(...)`` clauses judge, at
        ``confidence``; without them such a clause fails the gate.
        """
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be between 0 and 1 (exclusive), not {confidence!r}")
        judge = _Judge(values, comparisons, confidence)
        judge.prepare(self.tree)
        result = judge.run(self.tree)
        skipped = [c for c in judge.clauses if c.passed is None]
        if result is None:
            return GateVerdict(
                False,
                judge.clauses,
                "failed: no comparison was evaluated: "
                + "; ".join(
                    f"{c.text} skipped ({c.note.removeprefix('skipped: ')})" for c in skipped
                )
                + "; add a comparison with base",
            )
        if judge.broken:
            result = False
            reasons = "; ".join(judge.broken)
        else:
            reasons = "; ".join(judge.why(self.tree))
        explanation = f"{'passed' if result else 'failed'}: {reasons}"
        if skipped:
            explanation += "; skipped: " + "; ".join(
                f"{c.text} ({c.note.removeprefix('skipped: ')})" for c in skipped
            )
        return GateVerdict(result, judge.clauses, explanation)


def parse_gate(text: str, *, metrics: Collection[str] | None = None) -> Gate:
    """Parse and check a gate; :class:`GateSyntaxError` (a ValueError) says where it is wrong.

    ``metrics`` limits the metrics the gate may read (e.g. to the spec's
    ``evaluation.metrics``); by default any metric in the registry.
    """
    allowed = list(METRICS) if metrics is None else list(metrics)
    return Gate(_Parser(text, allowed).parse(), text)
