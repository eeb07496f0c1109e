"""The promotion gate: a small expression language, parsed and checked, never ``eval``-ed.

A gate, written in a spec as ``evaluation.promote_if``, compares metrics of the evaluated
targets, e.g. ``tuned.rouge_l >= base.rouge_l + 0.05 and tuned.exact_match >=
production.exact_match``. Grammar (lowest precedence first)::

    gate       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum [("<" | "<=" | ">" | ">=" | "==" | "!=") sum]
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | primary
    primary    := NUMBER | TARGET "." METRIC | "(" or ")"

NUMBER is decimal (``0.05``, ``.5``, ``1e-3``); TARGET is ``tuned``, ``base`` or
``production``; METRIC is a metric name. The parser then checks types: ``and``, ``or``, ``not``
and the gate itself take conditions (comparisons), comparisons and arithmetic take numbers.
Chained comparisons (``0 < x < 1``) are rejected: write ``0 < x and x < 1``. Nothing else is
accepted: no names besides target.metric, no attribute chains, calls, strings or indexing.
Parentheses, ``not`` and unary minus nest at most 32 deep. ``str(gate)`` is the normalised
form: single spaces, only the parentheses precedence needs, nested ``and``/``or`` flattened.

Evaluation:

- A comparison that needs a target that was not evaluated (typically ``production`` before
  anything was promoted) is **skipped**: it drops out of its ``and`` / ``or`` as if it were not
  written, ``not`` of a skipped condition is skipped, and a gate whose conditions are all
  skipped passes. So ``tuned.x >= production.x`` lets the first model through, and
  ``tuned.x > production.x or tuned.y > base.y`` does not pass on the skipped half alone.
- A comparison that needs a metric the evaluated target has no value for (e.g. it could score
  no example), or that divides by zero, **fails the gate**, whatever ``not`` or ``or`` surround
  it: a gate never passes on a number that does not exist.
- Every comparison is evaluated (no short-circuit), so the verdict lists each with its numbers.
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
from vertex_tuner.vocabulary import TARGETS

KEYWORDS = ("and", "or", "not")
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
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


Value = Num | Ref | Neg | BinOp
Cond = Compare | Logic | Not
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
    elif isinstance(node, (Compare, BinOp)):
        yield from _walk(node.left)
        yield from _walk(node.right)


# --- the parser ---------------------------------------------------------------------------------


def _is_condition(node: Node) -> bool:
    return isinstance(node, (Compare, Logic, Not))


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
            return self.comparison()
        self.take()
        self.nest(tok.column)
        operand = self.condition(self.not_())
        self.depth -= 1
        return Not(operand, tok.column)

    def comparison(self) -> Node:
        left = self.sum_()
        tok = self.peek()
        if tok.value not in COMPARISONS:
            return left
        self.value(left)
        self.take()
        right = self.value(self.sum_())
        after = self.peek()
        if after.value in COMPARISONS:
            raise self.fail(
                "chained comparisons are not supported; join two comparisons with 'and'",
                after.column,
            )
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
    #: Its two sides' values; None when they could not be computed.
    left: float | None
    right: float | None
    #: Why it was skipped or could not be computed; empty otherwise.
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "passed": self.passed,
            "left": self.left,
            "right": self.right,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ClauseResult:
        return cls(doc["text"], doc["passed"], doc["left"], doc["right"], doc.get("note", ""))


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


class _Skip(Exception):
    """A value needs a target that was not evaluated."""


class _NoValue(Exception):
    """A value cannot be computed: a metric without a value, or a division by zero."""


def fmt(value: float) -> str:
    """A number as the verdict shows it: four significant digits."""
    return f"{value:.4g}"


def _tidy(value: float) -> float:
    # Twelve significant digits hide binary noise (0.1 + 0.2) in the stored verdict.
    return float(f"{value:.12g}")


class _Judge:
    def __init__(self, values: Mapping[str, Mapping[str, float]]) -> None:
        self.values = values
        self.clauses: list[ClauseResult] = []
        #: Per comparison node (by identity): its result and the reason to give for it.
        self.results: dict[int, bool | None] = {}
        self.reasons: dict[int, str] = {}
        #: Why comparisons could not be judged; any of them fails the gate.
        self.broken: list[str] = []

    def value(self, node: Value) -> float:
        if isinstance(node, Num):
            return node.value
        if isinstance(node, Ref):
            metrics = self.values.get(node.target)
            if metrics is None:
                raise _Skip(f"no {node.target} model")
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

    def run(self, node: Cond) -> bool | None:
        result: bool | None
        if isinstance(node, Compare):
            result = self.compare(node)
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

    def compare(self, node: Compare) -> bool | None:
        text = str(node)
        try:
            left, right = self.finite(node.left), self.finite(node.right)
        except _Skip as skip:
            self.clauses.append(ClauseResult(text, None, None, None, f"skipped: {skip}"))
            self.reasons[id(node)] = f"{text} (skipped: {skip})"
            return None
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

    def why(self, node: Cond) -> list[str]:
        """The comparisons that gave ``node`` its result."""
        result = self.results[id(node)]
        if isinstance(node, Compare):
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

    def evaluate(self, values: Mapping[str, Mapping[str, float]]) -> GateVerdict:
        """Judge the gate on metric values per target (a target that was not evaluated is
        absent from ``values``)."""
        judge = _Judge(values)
        result = judge.run(self.tree)
        skipped = [c for c in judge.clauses if c.passed is None]
        if result is None:
            notes = sorted({c.note.removeprefix("skipped: ") for c in skipped})
            return GateVerdict(
                True,
                judge.clauses,
                f"passed: every condition was skipped ({'; '.join(notes)})",
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
