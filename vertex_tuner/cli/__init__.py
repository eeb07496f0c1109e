"""The ``vertex-tuner`` command line.

Each command lives in its own module and is imported only when it runs, so ``--help`` and
``validate`` never pay for importing the Google client libraries. The CLI is the only part of
the package that exits the process; see :mod:`vertex_tuner.cli._common` for the exit codes.
"""

from __future__ import annotations

import importlib
import signal
from typing import Any

import click

from vertex_tuner._version import __version__

#: command name -> "module:attribute", in the order ``--help`` lists them.
COMMANDS: dict[str, str] = {
    "validate": "vertex_tuner.cli.validate:validate",
    "submit": "vertex_tuner.cli.jobs:submit",
    "status": "vertex_tuner.cli.jobs:status",
    "wait": "vertex_tuner.cli.jobs:wait",
    "cancel": "vertex_tuner.cli.jobs:cancel",
    "list": "vertex_tuner.cli.jobs:list_",
    "runs": "vertex_tuner.cli.jobs:runs",
    "show": "vertex_tuner.cli.jobs:show",
    "evaluate": "vertex_tuner.cli.release:evaluate",
    "promote": "vertex_tuner.cli.release:promote",
    "rollback": "vertex_tuner.cli.release:rollback",
    "aliases": "vertex_tuner.cli.release:aliases",
    "retrain": "vertex_tuner.cli.release:retrain",
    "lifecycle": "vertex_tuner.cli.lifecycle:lifecycle",
    "reward": "vertex_tuner.cli.reward:reward",
    "prune": "vertex_tuner.cli.prune:prune",
    "sandbox": "vertex_tuner.cli.sandbox:sandbox",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module the first time the command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: Any = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vertex-tuner")
def cli() -> None:
    """Validate, submit, follow, evaluate and promote Gemini tuning jobs on Vertex AI.

    Job specs live in jobs/*.yaml. Add --sandbox to any cloud command to run it against local
    emulators instead of Google Cloud.
    """


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install_signal_handlers() -> None:
    """SIGTERM (a CI runner cancelling the step, ``kill``) and SIGHUP (a closed terminal) end
    the command the way Ctrl-C does: the create lease is released, a created job is left
    running and the message says how to resume, exit code 130."""
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _interrupt)


def main() -> None:
    """Console-script entry point."""
    install_signal_handlers()
    cli(prog_name="vertex-tuner")
