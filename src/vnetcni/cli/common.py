"""What every vnetctl command shares: exit codes, one error style, output formats, tables.

Exit codes (the same for every command; README "Exit codes"):
    0  done                         3  not found (pod, node, fabric, state)
    1  failed                       4  no permission (not root)
    2  bad input or usage           5  a tool is missing (tcpdump, nsenter)
    8  trace: the flow did not complete (lost, unanswered, reset on the way)
    9  trace: the destination refused the connection (nothing listens on the port)
Errors are one line on stderr, `error: <what>`, sometimes followed by `hint: <what to do>`; never
a traceback. Data goes to stdout: a table on a terminal, plain aligned columns (never cut) in a
pipe, or JSON with snake_case keys (`-o json`, or `--json`).
"""

from __future__ import annotations

import enum
import json
import re
import sys
from typing import Callable, NoReturn, Optional, Sequence

import typer

from ..capture.errors import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_NOT_FOUND, EXIT_PERMISSION,  # noqa: F401
                              EXIT_TOOL_MISSING, CaptureError)

EXIT_OK = 0
EXIT_FLOW_INCOMPLETE = 8
EXIT_REFUSED = 9


class CliError(CaptureError):
    """An operator-facing failure of any vnetctl command: message, hint, exit code."""


class NotFound(CliError):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint, EXIT_NOT_FOUND)


class BadArgument(CliError):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint, EXIT_BAD_INPUT)


def say(message: str) -> None:
    """Progress and notes: stderr, so stdout holds only the data."""
    print(f"vnetctl: {message}", file=sys.stderr, flush=True)


def error(message: str, hint: str = "", code: int = EXIT_FAILED) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    if hint:
        print(f"hint: {hint}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def _classify(exc: BaseException) -> tuple[str, str, int]:
    """(message, hint, exit code) of an expected failure."""
    from ..cni.errors import CNIError

    if isinstance(exc, CaptureError):
        return exc.message, exc.hint, exc.exit_code
    if isinstance(exc, CNIError):
        msg = f"{exc.msg} (CNI error {exc.code})" + (f": {exc.details}" if exc.details else "")
        return msg, "", EXIT_FAILED
    if isinstance(exc, PermissionError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return (f"permission denied{where}", "run it as root (network namespaces, /run and the node's "
                "state need it)", EXIT_PERMISSION)
    if isinstance(exc, LookupError):
        return str(exc).strip("'\""), "", EXIT_NOT_FOUND
    if isinstance(exc, ValueError):
        return str(exc), "", EXIT_BAD_INPUT
    if isinstance(exc, OSError):
        return (f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")), "", EXIT_FAILED
    from ..sim.errors import SimError

    if isinstance(exc, SimError):
        return str(exc), getattr(exc, "hint", ""), EXIT_FAILED
    return f"unexpected failure: {type(exc).__name__}: {exc}", "", EXIT_FAILED


def guarded(body: Callable[[], Optional[int]]) -> None:
    """Run a command body: expected failures become `error: …` and their exit code, anything else
    a one-line unexpected failure (exit 1); never a traceback. The body's int is the exit code."""
    try:
        code = body()
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise typer.Exit(130) from None
    except BrokenPipeError:
        # `vnetctl … | head`: the reader is gone; leave quietly, as a SIGPIPE'd tool does (128+13)
        import os

        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        raise typer.Exit(141) from None
    except Exception as exc:  # noqa: BLE001 - the operator gets a sentence, not a traceback
        message, hint, code = _classify(exc)
        error(message, hint, code)
    raise typer.Exit(code or 0)


# --- output ----------------------------------------------------------------------------------
class Output(str, enum.Enum):
    json = "json"
    wide = "wide"


def output_option(what: str = "the data") -> Optional[Output]:
    return typer.Option(None, "-o", "--output", help=f"Print {what} as json, or a wide table with every column.")


JSON_OPTION = typer.Option(False, "--json", help="The same as -o json.")


def want_json(output: Optional[Output], as_json: bool) -> bool:
    return as_json or output == Output.json


_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_KEY = re.compile(r"^[a-z][A-Za-z0-9 ]*$")


def snake(key: str) -> str:
    """camelCase and "two words" keys in snake_case; data used as keys (addresses, MACs, pod
    names like default/web) is left alone."""
    if not _KEY.match(key):
        return key
    return _CAMEL.sub(r"_\1", key).replace(" ", "_").lower()


# Values that are documents of another program, printed to be pasted there: kept verbatim.
VERBATIM = frozenset({"kubelet_config", "conflist", "netconf"})


def snake_keys(value):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key = snake(k) if isinstance(k, str) else k
            out[key] = v if key in VERBATIM else snake_keys(v)
        return out
    if isinstance(value, (list, tuple)):
        return [snake_keys(v) for v in value]
    return value


def emit_json(data) -> None:
    """Every vnetctl JSON document: snake_case keys, two-space indent, one trailing newline."""
    typer.echo(json.dumps(snake_keys(data), indent=2, sort_keys=False, default=str))


def interactive() -> bool:
    return sys.stdout.isatty()


def console(stderr: bool = False, pipe_width: int = 10_000):
    """Rich on a terminal (its width); a plain, very wide console in a pipe, so nothing is cut
    (a narrower `pipe_width` for output with rules, like the demo's)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(highlight=False, emoji=False, log_path=False, stderr=stderr)
    return Console(highlight=False, emoji=False, log_path=False, stderr=stderr, width=pipe_width,
                   no_color=True, color_system=None, soft_wrap=pipe_width >= 10_000)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
          styles: Optional[Sequence[str]] = None) -> None:
    """A table: rich (folding, never truncating) on a terminal; in a pipe plain columns with an
    upper-case header, full values, one row per line (`| grep`, `| awk` work)."""
    cells = [[("-" if c is None or c == "" else str(c)) for c in row] for row in rows]
    if not interactive():
        head = [c.upper().replace(" ", "_") for c in columns]
        widths = [max([len(head[i])] + [len(r[i]) for r in cells]) for i in range(len(columns))]
        out = sys.stdout
        for line in [head] + cells:
            out.write("  ".join(v.ljust(widths[i]) for i, v in enumerate(line)).rstrip() + "\n")
        out.flush()
        return
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, overflow="fold")
    for i, row in enumerate(cells):
        t.add_row(*(escape(c) for c in row), style=(styles[i] if styles else None))
    console().print(t)
