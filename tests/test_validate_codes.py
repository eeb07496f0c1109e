"""Finding codes are a contract: the table in the code, the docs and the source agree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from vertex_tuner.dataset.codes import CODES
from vertex_tuner.dataset.rules import TRUNCATION_CODES

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "vertex_tuner" / "dataset"


def test_the_readme_lists_every_code_with_its_meaning() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Finding codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| (.+) \|$", section, re.M)
    assert rows == [(code, meaning) for code, (_, meaning) in CODES.items()]


def test_kebab_case_and_truncation_codes() -> None:
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", code) for code in CODES)
    assert {c for c, (kind, _) in CODES.items() if kind == "truncation"} == TRUNCATION_CODES


def _codes_in_source() -> set[str]:
    """String constants passed as a finding's code anywhere in the dataset package."""
    found: set[str] = set()

    def constant(node: ast.AST | None) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)

    # The CLI's validate adds one finding of its own: the spec's base model retiring.
    for path in [*PACKAGE.glob("*.py"), REPO / "vertex_tuner" / "cli" / "validate.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name == "Finding" and len(node.args) > 1:
                    constant(node.args[1])
                elif name in ("err", "finding", "ConversionError") and node.args:
                    constant(node.args[0])
            elif isinstance(node, ast.Assign):
                targets = [t for t in node.targets if isinstance(t, ast.Tuple)]
                for target in targets:
                    for i, element in enumerate(target.elts):
                        if getattr(element, "id", None) == "code" and isinstance(
                            node.value, ast.Tuple
                        ):
                            constant(node.value.elts[i])
                if any(getattr(t, "id", None) in ("code", "RETIRING_CODE") for t in node.targets):
                    constant(node.value)
    # Built from the role's name: f"{role}-leakage".
    return found | {"validation-leakage", "holdout-leakage"}


def test_every_code_in_the_source_is_documented_and_every_documented_code_is_used() -> None:
    used = _codes_in_source()
    assert used == set(CODES), (used - set(CODES), set(CODES) - used)
