"""What every command shares: output streams, JSON output and turning errors into exit codes.

Exit codes (documented in the README):

==== =====================================================================
0    success
1    invalid input (spec or dataset), or the job failed, was cancelled or expired
2    usage error (bad flags or arguments)
3    the cost estimate is over ``budget.max_cost_usd``
4    the wait timed out; the job is still running
5    the evaluation gate failed
130  interrupted (Ctrl-C): the job, if any, keeps running; the message says how to resume
==== =====================================================================
"""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click
import orjson
from rich.console import Console

from vertex_tuner.errors import VertexTunerError

if TYPE_CHECKING:
    from collections.abc import Callable

P = ParamSpec("P")
R = TypeVar("R")

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_BUDGET = 3
EXIT_TIMEOUT = 4
EXIT_GATE = 5
EXIT_INTERRUPTED = 130


def stderr_console() -> Console:
    """A console for progress and human-readable output; stdout is kept for results."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def is_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def echo_json(document: Any) -> None:
    """Write one JSON document to stdout."""
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def fail(message: str, code: int = EXIT_INVALID, *, hint: str | None = None) -> NoReturn:
    console = stderr_console()
    console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
    if hint:
        console.print(f"  [dim]hint:[/] {hint}", markup=True, highlight=False)
    sys.exit(code)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn our errors into a message on stderr and the right exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except VertexTunerError as exc:
            fail(exc.message, exc.exit_code, hint=exc.hint)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)

    return wrapper
