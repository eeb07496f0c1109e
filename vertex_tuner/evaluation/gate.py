"""The promotion gate: a small expression language, parsed and checked, never ``eval``-ed.

Grammar::

    gate       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison | "(" gate ")"
    comparison := sum ("<" | "<=" | ">" | ">=" | "==" | "!=") sum
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | NUMBER | TARGET "." METRIC | "(" sum ")"

TARGET is ``tuned``, ``base`` or ``production``; METRIC is a metric name. A comparison whose
values include a target that was not evaluated (no ``production`` model yet) is *skipped* and
counts as passed, and the verdict says so. Division by zero makes its comparison fail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from vertex_tuner.evaluation.metrics import METRICS

TARGETS = ("tuned", "base", "production")
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d*)?|\.\d+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\)|\.)|(?P<bad>\S))"
)
_COMPARE = ("<", "<=", ">", ">=", "==", "!=")


class GateSyntaxError(ValueError):
    def __init__(self, message: str, text: str, column: int) -> None:
        self.column = column
        self.text = text
        caret = " " * (column - 1) + "^"
        super().__init__(f"{message} at column {column}\n  {text}\n  {caret}")


@dataclass(frozen=True)
class _Tok:
    kind: str
    value: str
    column: int


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            break
        kind = match.lastgroup or ""
        value = match.group(kind) if kind else ""
        column = match.start(kind) + 1 if kind else pos + 1
        if kind == "bad":
            raise GateSyntaxError(f"unexpected character {value!r}", text, column)
        if kind:
            tokens.append(_Tok(kind, value, column))
        pos = match.end()
    tokens.append(_Tok("end", "", len(text) + 1))
    return tokens


# --- the tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    value: float

    def __str__(self) -> str:
        return f"{self.value:g}"


@dataclass(frozen=True)
class Ref:
    target: str
    metric: str

    def __str__(self) -> str:
        return f"{self.target}.{self.metric}"


@dataclass(frozen=True)
class BinOp:
    op: str
    left: Value
    right: Value

    def __str__(self) -> str:
        return f"({self.left} {self.op} {self.right})"


@dataclass(frozen=True)
class Neg:
    operand: Value

    def __str__(self) -> str:
        return f"-{self.operand}"


Value = Num | Ref | BinOp | Neg


@dataclass(frozen=True)
class Compare:
    op: str
    left: Value
    right: Value

    def __str__(self) -> str:
        return f"{_plain(self.left)} {self.op} {_plain(self.right)}"


@dataclass(frozen=True)
class Logic:
    op: str  # "and" | "or"
    items: tuple[Cond, ...]

    def __str__(self) -> str:
        return f" {self.op} ".join(f"({i})" if isinstance(i, Logic) else str(i) for i in self.items)


@dataclass(frozen=True)
class Not:
    operand: Cond

    def __str__(self) -> str:
        return f"not ({self.operand})"


Cond = Compare | Logic | Not


def _plain(value: Value) -> str:
    text = str(value)
    return text[1:-1] if isinstance(value, BinOp) else text


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, message: str, tok: _Tok | None = None) -> GateSyntaxError:
        return GateSyntaxError(message, self.text, (tok or self.peek()).column)

    def expect(self, value: str) -> None:
        tok = self.take()
        if tok.value != value:
            raise self.fail(f"expected {value!r}", tok)

    def parse(self) -> Cond:
        if self.peek().kind == "end":
            raise self.fail("the gate is empty")
        cond = self.or_()
        if self.peek().kind != "end":
            raise self.fail(f"unexpected {self.peek().value!r}")
        return cond

    def or_(self) -> Cond:
        items = [self.and_()]
        while self.peek().value == "or":
            self.take()
            items.append(self.and_())
        return items[0] if len(items) == 1 else Logic("or", tuple(items))

    def and_(self) -> Cond:
        items = [self.not_()]
        while self.peek().value == "and":
            self.take()
            items.append(self.not_())
        return items[0] if len(items) == 1 else Logic("and", tuple(items))

    def not_(self) -> Cond:
        if self.peek().value == "not":
            self.take()
            return Not(self.not_())
        if self.peek().value == "(":
            # A parenthesis may open a condition or a value: try the condition first.
            saved = self.i
            self.take()
            try:
                cond = self.or_()
                self.expect(")")
                if self.peek().value not in (*_COMPARE, "+", "-", "*", "/"):
                    return cond
            except GateSyntaxError:
                pass
            self.i = saved
        return self.comparison()

    def comparison(self) -> Compare:
        left = self.sum_()
        tok = self.peek()
        if tok.value not in _COMPARE:
            raise self.fail("expected a comparison (<, <=, >, >=, ==, !=)", tok)
        self.take()
        right = self.sum_()
        if self.peek().value in _COMPARE:
            raise self.fail("chained comparisons are not supported; join them with 'and'")
        return Compare(tok.value, left, right)

    def sum_(self) -> Value:
        value = self.product()
        while self.peek().value in ("+", "-"):
            op = self.take().value
            value = BinOp(op, value, self.product())
        return value

    def product(self) -> Value:
        value = self.unary()
        while self.peek().value in ("*", "/"):
            op = self.take().value
            value = BinOp(op, value, self.unary())
        return value

    def unary(self) -> Value:
        tok = self.take()
        if tok.value == "-":
            return Neg(self.unary())
        if tok.kind == "num":
            return Num(float(tok.value))
        if tok.value == "(":
            value = self.sum_()
            self.expect(")")
            return value
        if tok.kind == "name":
            if tok.value not in TARGETS:
                raise self.fail(f"unknown target {tok.value!r}; use tuned, base or production", tok)
            if self.peek().value != ".":
                raise self.fail(f"expected '.' and a metric after {tok.value!r}")
            self.take()
            metric = self.take()
            if metric.kind != "name" or metric.value not in METRICS:
                raise self.fail(
                    f"unknown metric {metric.value!r}; known: {', '.join(METRICS)}", metric
                )
            if self.peek().value in (".", "("):
                raise self.fail("only target.metric references are allowed")
            return Ref(tok.value, metric.value)
        if tok.kind == "end":
            raise self.fail("the gate ends too early", tok)
        raise self.fail(f"unexpected {tok.value!r}", tok)


# --- evaluation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClauseResult:
    text: str
    #: None: skipped because a target was not evaluated.
    passed: bool | None
    left: float | None
    right: float | None


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    clauses: list[ClauseResult]
    explanation: str

    def to_json(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "explanation": self.explanation,
            "clauses": [
                {"text": c.text, "passed": c.passed, "left": c.left, "right": c.right}
                for c in self.clauses
            ],
        }


class _Missing(Exception):
    pass


def _value(node: Value, values: Mapping[str, Mapping[str, float]]) -> float:
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Ref):
        metrics = values.get(node.target)
        if metrics is None or node.metric not in metrics:
            raise _Missing(str(node))
        return float(metrics[node.metric])
    if isinstance(node, Neg):
        return -_value(node.operand, values)
    left, right = _value(node.left, values), _value(node.right, values)
    if node.op == "+":
        return left + right
    if node.op == "-":
        return left - right
    if node.op == "*":
        return left * right
    if right == 0:
        raise ZeroDivisionError(str(node))
    return left / right


_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


class Gate:
    """A parsed gate."""

    def __init__(self, text: str, tree: Cond) -> None:
        self.text = text
        self.tree = tree

    def __str__(self) -> str:
        return str(self.tree)

    @property
    def references(self) -> frozenset[tuple[str, str]]:
        found: set[tuple[str, str]] = set()

        def walk(node: object) -> None:
            if isinstance(node, Ref):
                found.add((node.target, node.metric))
            for child in getattr(node, "__dict__", {}).values():
                if isinstance(child, tuple):
                    for item in child:
                        walk(item)
                else:
                    walk(child)

        walk(self.tree)
        return frozenset(found)

    def evaluate(self, values: Mapping[str, Mapping[str, float]]) -> GateVerdict:
        clauses: list[ClauseResult] = []

        def run(node: Cond) -> bool:
            if isinstance(node, Compare):
                try:
                    left, right = _value(node.left, values), _value(node.right, values)
                except _Missing as missing:
                    clauses.append(
                        ClauseResult(f"{node} (skipped: no {missing})", None, None, None)
                    )
                    return True
                except ZeroDivisionError:
                    clauses.append(ClauseResult(f"{node} (division by zero)", False, None, None))
                    return False
                ok = bool(_OPS[node.op](left, right))
                clauses.append(ClauseResult(str(node), ok, round(left, 6), round(right, 6)))
                return ok
            if isinstance(node, Not):
                return not run(node.operand)
            results = [run(item) for item in node.items]  # every clause, for the report
            return all(results) if node.op == "and" else any(results)

        passed = run(self.tree)
        failed = [c for c in clauses if c.passed is False]
        skipped = [c for c in clauses if c.passed is None]
        if passed:
            explanation = "all conditions hold"
        else:
            explanation = (
                "; ".join(
                    f"{c.text} is false ({c.left:g} vs {c.right:g})"
                    if c.left is not None
                    else c.text
                    for c in failed
                )
                or "the condition is false"
            )
        if skipped:
            explanation += " (" + "; ".join(c.text for c in skipped) + ")"
        return GateVerdict(passed, clauses, explanation)


def parse_gate(text: str) -> Gate:
    """Parse and check a gate; GateSyntaxError (a ValueError) says where it is wrong."""
    return Gate(text, _Parser(text).parse())
