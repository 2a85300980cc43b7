"""vnetctl bench: vnet-cni against the reference plugins, same machine, same run."""

from __future__ import annotations

import json
import os

import typer


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)


def render_markdown(report: dict) -> str:
    have_ref = any("reference" in r for r in report["rows"])
    head = ["what", "reference bridge+host-local", "vnet, no vnetd", "vnet + vnetd", "vnetd / reference", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["rows"]:
        if r["key"] == "vnetd_rss_mib":
            target = f"<= {r['limit_mib']:.0f} MiB" if r.get("limit_mib") else ""
        else:
            target = f"<= {r['target']:.1f}x" if r.get("target") else ""
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
        lines.append("| " + " | ".join([r["label"], _fmt(r.get("reference")) if have_ref else "n/a",
                                        _fmt(r.get("inproc")), _fmt(r.get("vnetd")), ratio, target]) + " |")
    lines.append(f"| kernel floor: one pod's netlink work, raw socket, warm (ms) | | | {report['kernel_floor_ms']:.1f} | | |")
    return "\n".join(lines)


def bench(
    pods: int = typer.Option(50, "--pods", help="Pods in the sequential ADD/DEL scenario."),
    burst: int = typer.Option(30, "--burst", help="Size of the first burst (ADDs launched at once)."),
    big_burst: int = typer.Option(110, "--big-burst", help="Size of the second burst (Kubernetes' default max-pods)."),
    as_json: bool = typer.Option(False, "--json", help="Print the full results as JSON."),
    no_reference: bool = typer.Option(False, "--no-reference", help="Skip the reference plugins."),
) -> None:
    """Benchmark vnet (+vnetd) against the reference bridge + host-local, in throwaway namespaces."""
    if os.geteuid() != 0:
        typer.echo("vnetctl bench: needs root (it builds network namespaces)", err=True)
        raise typer.Exit(1)
    if min(pods, burst, big_burst) < 1:
        typer.echo("vnetctl bench: sizes must be at least 1", err=True)
        raise typer.Exit(2)
    from ..bench.run import run_bench

    def progress(msg: str) -> None:
        if not as_json:
            typer.echo(f"... {msg}", err=True)

    report = run_bench(pods, burst, big_burst, progress, with_reference=not no_reference)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(render_markdown(report))
    typer.echo(f"\nfront door: {report['front_door']}; {report['machine']['cpus']} CPUs, kernel "
               f"{report['machine']['kernel']}, Python {report['machine']['python']}; took {report['seconds']} s")
    failed = next(r for r in report["rows"] if r["key"] == "failed")
    if any(failed.get(k) for k in ("reference", "inproc", "vnetd")):
        typer.echo("some calls failed: see --json for the first error of each scenario", err=True)
        raise typer.Exit(1)
