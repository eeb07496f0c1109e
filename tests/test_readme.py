"""The README's promises: the Quick start commands and the CLI it documents."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from vertex_tuner.cli import COMMANDS, cli

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def quick_start() -> list[str]:
    section = README.split("## Quick start", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "Quick start has no ```sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_has_the_two_commands() -> None:
    lines = quick_start()
    assert len(lines) == 2
    assert lines[0].endswith("vertex-tuner submit jobs/support_tone.yaml --sandbox")
    assert "pytest" in lines[1]


def test_ci_runs_the_readme_test_command() -> None:
    assert quick_start()[1] in (REPO / ".ci" / "run").read_text()


def test_every_command_in_the_readme_table_exists() -> None:
    commands = README.split("## Using it", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z]+)[ `]", commands, re.M))
    assert documented <= set(COMMANDS), documented - set(COMMANDS)
    assert set(COMMANDS) <= documented | {"show", "rollback", "aliases"}


def test_documented_flags_exist() -> None:
    runner = CliRunner()
    for command, flags in {
        "submit": [
            "--sandbox",
            "--dry-run",
            "--no-wait",
            "--force",
            "--retry-failed",
            "--timeout",
            "--json",
            "--evaluate",
            "--promote",
        ],
        "cancel": ["--wait"],
        "evaluate": ["--against", "--report", "--json"],
        "promote": ["--alias", "--if-gate", "--mirror-vertex"],
    }.items():
        result = runner.invoke(cli, [command, "--help"])
        assert result.exit_code == 0, result.output
        for flag in flags:
            assert flag in result.output, (command, flag)


def test_exit_codes_table_matches_the_code() -> None:
    """The README's table is errors.EXIT_CODES, and every error class exits with one of them."""
    from vertex_tuner import errors

    table = {int(k): v for k, v in re.findall(r"^\| (\d+) \| (.+) \|$", README, re.M)}
    assert table == errors.EXIT_CODES

    def subclasses(cls: type) -> list[type]:
        return [cls, *(s for c in cls.__subclasses__() for s in subclasses(c))]

    used = {cls.exit_code for cls in subclasses(errors.VertexTunerError)}
    assert used <= set(errors.EXIT_CODES)
    assert {errors.BudgetExceeded.exit_code, errors.GateFailed.exit_code} == {3, 5}
    assert errors.WaitTimeout.exit_code == errors.EXIT_TIMEOUT == 4
