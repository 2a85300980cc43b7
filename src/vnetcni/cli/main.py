"""vnetctl: the operator's command line (install, status, endpoints, ipam, capacity, gc, capture,
trace, fabric, pod, demo, bench). Shared vocabulary, exit codes and output: cli/common.py."""

from __future__ import annotations

import importlib
from typing import Optional

import typer

from .. import __version__
from .common import JSON_OPTION, Output, emit_json, output_option, want_json
from .help import plain_help, plain_usage_errors

plain_help()
plain_usage_errors()

app = typer.Typer(
    name="vnetctl",
    help="Operate vnet-cni: VNet pod networking where every pod gets one of its node's VNet addresses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module registers its own commands: register(app).
_REGISTRARS: tuple[str, ...] = (
    "node_cmds",
    "deploy_cmds",
    "capture_cmds",
    "ipam_cmds",
    "fabric_cmds",
    "bench_cmds",
)


def _version_data() -> dict:
    from ..cni.versions import SUPPORTED_VERSIONS

    return {"version": __version__, "cni_versions": list(SUPPORTED_VERSIONS)}


def _print_version(value: bool) -> None:
    if value:
        data = _version_data()
        typer.echo(f"vnet-cni {data['version']} (CNI {', '.join(data['cni_versions'])})")
        raise typer.Exit()


@app.callback()
def _root(_version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                        help="Print the version and exit.")) -> None:
    """vnetctl: operate vnet-cni on this node.

    Exit codes: 0 done, 1 failed, 2 bad input, 3 not found, 4 no permission, 5 tool missing;
    trace: 8 the flow did not complete, 9 the destination refused it.
    """


@app.command()
def version(output: Optional[Output] = output_option("the version"), as_json: bool = JSON_OPTION) -> None:
    """Print vnet-cni's version and the CNI spec versions it speaks."""
    data = _version_data()
    if want_json(output, as_json):
        emit_json(data)
        return
    typer.echo(f"vnet-cni {data['version']} (CNI {', '.join(data['cni_versions'])})")


for _name in _REGISTRARS:
    importlib.import_module(f"{__package__}.{_name}").register(app)


def main() -> None:
    app()
