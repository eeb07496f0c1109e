"""What every command shares: output streams, JSON output and turning errors into exit codes.

The exit codes and their meanings are defined once, in :mod:`vertex_tuner.errors`
(``EXIT_CODES``); each error class carries its own ``exit_code``.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click
import orjson
from rich.console import Console
from rich.markup import escape

from vertex_tuner.errors import (
    EXIT_BUDGET,
    EXIT_GATE,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    VertexTunerError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

P = ParamSpec("P")
R = TypeVar("R")

__all__ = [
    "EXIT_BUDGET",
    "EXIT_GATE",
    "EXIT_INTERRUPTED",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "echo_json",
    "fail",
    "handle_errors",
    "is_github_actions",
    "stderr_console",
]


def stderr_console() -> Console:
    """A console for progress and human-readable output; stdout is kept for results."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def is_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def emit(renderable: Any, ids: Sequence[str]) -> None:
    """One rendering: the table on a terminal; the plain ids on stdout when it is piped (the
    table then goes to stderr, for the person watching)."""
    if sys.stdout.isatty():
        if renderable is not None:
            Console(highlight=False, soft_wrap=True).print(renderable)
        return
    if renderable is not None:
        stderr_console().print(renderable)
    for value in ids:
        click.echo(value)


def echo_json(document: Any) -> None:
    """Write one JSON document to stdout."""
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def locating_flags(params: Mapping[str, Any] | None = None) -> list[str]:
    """The options of the running command that say where its runs are (--sandbox, --registry)."""
    if params is None:
        ctx = click.get_current_context(silent=True)
        params = ctx.params if ctx is not None else {}
    flags = []
    if params.get("sandbox"):
        flags.append("--sandbox")
    if params.get("registry"):
        flags += ["--registry", shlex.quote(str(params["registry"]))]
    return flags


#: Where a command keeps the run record a failure's JSON document should carry.
RECORD_KEY = "vertex_tuner.record"


def remember_record(record: Any) -> None:
    """Attach the run record (anything with ``to_json()``, or a plain document) to a
    failure's --json document (the job exists; say which)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and record is not None:
        ctx.meta[RECORD_KEY] = record if isinstance(record, dict) else record.to_json()


#: A ``vertex-tuner COMMAND ARGS`` in a message: up to a backtick, ``;``, ``)`` or the line's end.
_COMMAND = re.compile(r"vertex-tuner (?!sandbox\b)[a-z]+[^`;)\n]*")


def located(text: str | None, flags: Sequence[str] | None = None) -> str | None:
    """``text`` with every vertex-tuner command in it given the options that locate the run,
    so a printed hint can be pasted and run as it is."""
    if not text:
        return text
    wanted = locating_flags() if flags is None else list(flags)
    if not wanted:
        return text

    def add(match: re.Match[str]) -> str:
        command = match.group(0)
        body = command.rstrip()
        missing = [f for f in _flag_groups(wanted) if f.split(" ", 1)[0] not in body.split()]
        if not missing:
            return command
        return " ".join([body, *missing]) + command[len(body) :]

    return _COMMAND.sub(add, text)


def _flag_groups(flags: Sequence[str]) -> list[str]:
    """["--sandbox", "--registry", "x"] → ["--sandbox", "--registry x"]."""
    out: list[str] = []
    for flag in flags:
        if flag.startswith("--") or not out:
            out.append(flag)
        else:
            out[-1] += f" {flag}"
    return out


def fail(message: str, code: int = EXIT_INVALID, *, hint: str | None = None) -> NoReturn:
    """Say what failed and what to do (on stderr; with --json also as one document on stdout)."""
    message = located(message) or message
    hint = located(hint)
    console = stderr_console()
    console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    if hint:
        console.print(f"  [dim]hint:[/] {escape(hint)}", markup=True, highlight=False)
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.params.get("as_json"):
        # A failed or timed-out job's record keeps its keys at the top (job_name, run_id, …),
        # as before, so scripts that read them keep working.
        doc: dict[str, Any] = {**ctx.meta.get(RECORD_KEY, {})}
        doc.update(error=message, hint=hint, exit_code=code)
        echo_json(doc)
    sys.exit(code)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn our errors into a message on stderr and the right exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except VertexTunerError as exc:
            fail(exc.message, exc.exit_code, hint=exc.hint)
        except click.ClickException as exc:
            if kwargs.get("as_json"):
                echo_json({"error": exc.format_message(), "hint": None, "exit_code": exc.exit_code})
            raise
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)

    return wrapper
