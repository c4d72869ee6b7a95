"""The command line's error contract: a user mistake ends in one line and exit 1, never a traceback.

Shared by the runtime's commands (:mod:`fastdpr.cli`) and the export package's ``fastdpr export``.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import click

from fastdpr.common.errors import FastDPRError

F = TypeVar("F", bound=Callable[..., Any])


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """Warnings a user should read (e.g. int8 failing its check on this CPU), without a source line."""
    click.echo(f"warning: {message}", err=True)


def user_errors(func: F) -> F:
    """Turn fastdpr's own errors into click errors (message, exit code 1).

    An ``OSError`` that escapes (a disk that fills up, a file removed or made unreadable while a command
    runs) is the machine's answer to the user's paths, not a bug in fastdpr: it too ends in one line.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.showwarning = _show_warning
        try:
            return func(*args, **kwargs)
        except FastDPRError as exc:
            raise click.ClickException(one_line_message(exc)) from exc
        except OSError as exc:
            raise click.ClickException(os_error_message(exc)) from exc

    return wrapper  # type: ignore[return-value]


def one_line_message(exc: FastDPRError) -> str:
    """The error's one-line message; its details are printed to stderr first when FASTDPR_DETAILS=1."""
    if exc.details:
        if os.environ.get("FASTDPR_DETAILS", "") not in ("", "0"):
            click.echo(exc.details, err=True)
            return str(exc)
        return f"{exc} (details: rerun with FASTDPR_DETAILS=1)"
    return str(exc)


def os_error_message(exc: OSError) -> str:
    """``[Errno 28] No space left on device: 'x'`` as one line: what failed and on which file."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}".replace("\n", " ")


def echo_json(data: Any) -> None:
    """Print JSON for scripts (UTF-8, no ASCII escaping)."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2))
