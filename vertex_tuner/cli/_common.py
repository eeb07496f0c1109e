"""What every command shares: output streams, JSON output and turning errors into exit codes.

The exit codes and their meanings are defined once, in :mod:`vertex_tuner.errors`
(``EXIT_CODES``); each error class carries its own ``exit_code``.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click
import orjson
from rich.console import Console

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
