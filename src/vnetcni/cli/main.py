"""vnetctl: the operator's command line (install, status, endpoints, ipam, capacity, capture, fabric, demo, bench)."""

from __future__ import annotations

import importlib

import typer

from .. import __version__

app = typer.Typer(
    name="vnetctl",
    help="Operate vnet-cni: VNet pod networking where every pod gets one of its node's VNet addresses.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its own commands: register(app).
_REGISTRARS: tuple[str, ...] = (
    "node_cmds",
    "capture_cmds",
    "ipam_cmds",
    "fabric_cmds",
    "bench_cmds",
)


@app.callback()
def _root() -> None:
    """vnetctl: operate vnet-cni on this node."""


@app.command()
def version() -> None:
    """Print vnet-cni's version and the CNI spec versions it speaks."""
    from ..cni.versions import SUPPORTED_VERSIONS

    typer.echo(f"vnet-cni {__version__} (CNI {', '.join(SUPPORTED_VERSIONS)})")


for _name in _REGISTRARS:
    importlib.import_module(f"{__package__}.{_name}").register(app)


def main() -> None:
    app()
