"""vnetctl bench: vnet-cni against the reference plugins, same machine, same run."""

from __future__ import annotations

import os
from typing import Optional

import typer

from .common import (EXIT_BAD_INPUT, EXIT_PERMISSION, JSON_OPTION, Output, emit_json, error, output_option,
                     want_json)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


# (column heading, row key or ratio key): bridge mode, then transparent mode, each with its reference
_COLUMNS = {
    "bridge": [("reference bridge+host-local", "reference"), ("vnet, no vnetd", "inproc"),
               ("vnet + vnetd", "vnetd"), ("vnetd / reference", "ratio")],
    "transparent": [("reference ptp+host-local", "reference-ptp"), ("vnet transparent + vnetd", "vnetd-transparent"),
                    ("transparent / ptp", "ratio_transparent")],
}


def render_markdown(report: dict) -> str:
    with_ref = bool(report.get("with_reference", True))
    columns = [c for mode in report.get("modes", ["bridge"]) for c in _COLUMNS[mode]]
    head = ["what", *(h for h, _ in columns), "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        if r["key"] == "vnetd_rss_mib":
            target = f"<= {r['limit_mib']:.0f} MiB" if r.get("limit_mib") else ""
        else:
            target = f"<= {r['target']:.1f}x" if r.get("target") else ""
        cells = []
        for _, key in columns:
            if key.startswith("ratio"):
                cells.append(f"{r[key]:.2f}x" if r.get(key) is not None else "-")
            elif key.startswith("reference") and not with_ref:
                cells.append("n/a")
            else:
                cells.append(_fmt(r.get(key)))
        lines.append("| " + " | ".join([r["label"], *cells, target]) + " |")
    floor = f"{report['kernel_floor_ms']:.1f}"
    lines.append("| kernel floor: one pod's netlink work, raw socket, warm (ms) | "
                 + " | ".join(floor if key == "vnetd" else "" for _, key in columns) + " | |")
    return "\n".join(lines)


def bench(
    pods: int = typer.Option(50, "--pods", help="Pods in the sequential ADD/DEL scenario."),
    burst: int = typer.Option(30, "--burst", help="Size of the first burst (ADDs launched at once)."),
    big_burst: int = typer.Option(110, "--big-burst", help="Size of the second burst (Kubernetes' default max-pods)."),
    output: Optional[Output] = output_option("the full results"),
    as_json: bool = JSON_OPTION,
    no_reference: bool = typer.Option(False, "--no-reference", help="Skip the reference plugins."),
    mode: str = typer.Option("both", "--mode",
                             help="bridge, transparent, or both (each against its reference: bridge, ptp)."),
) -> None:
    """Benchmark vnet (+vnetd) against the reference bridge + host-local, in throwaway namespaces."""
    modes = {"both": ("bridge", "transparent"), "bridge": ("bridge",), "transparent": ("transparent",)}.get(mode)
    if modes is None:
        error(f"--mode must be bridge, transparent or both, not {mode!r}", code=EXIT_BAD_INPUT)
    if min(pods, burst, big_burst) < 1:
        error("--pods, --burst and --big-burst must be at least 1", code=EXIT_BAD_INPUT)
    if os.geteuid() != 0:
        error("`vnetctl bench` needs root: it builds network namespaces", "run it as root", EXIT_PERMISSION)
    as_json = want_json(output, as_json)
    from ..bench.run import run_bench

    def progress(msg: str) -> None:
        if not as_json:
            typer.echo(f"... {msg}", err=True)

    report = run_bench(pods, burst, big_burst, progress, with_reference=not no_reference, modes=modes)
    if as_json:
        emit_json(report)
        return
    typer.echo(render_markdown(report))
    typer.echo(f"\nfront door: {report['front_door']}; {report['machine']['cpus']} CPUs, kernel "
               f"{report['machine']['kernel']}, Python {report['machine']['python']}; took {report['seconds']} s")
    failed = next(r for r in report["rows"] if r["key"] == "failed")
    if any(failed.get(k) for k in report["results"]):
        error("some calls failed: see -o json for the first error of each scenario")
