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
_FALLBACK_COLUMNS = [("reference bridge+host-local", "reference"), ("vnet, no vnetd", "inproc"),
                     ("no vnetd / reference", "ratio")]
_UNITS = {"x": "x", "ms": " ms", "MiB": " MiB"}


def _target(r: dict) -> str:
    if r.get("target") is None:
        return ""
    unit = r.get("target_unit") or "x"
    return f"<= {r['target']:g}{_UNITS.get(unit, ' ' + unit)}"


def _verdicts(r: dict, keys: list[str]) -> str:
    """The row's verdicts, one per mode ("met / not met" when both modes ran); "" without a target."""
    if r.get("target") is None:
        return ""
    return " / ".join(r.get(k) or "-" for k in keys)


def _table(rows: list[dict], columns: list[tuple[str, str]], verdict_keys: list[str], with_ref: bool,
           verdict_heading: str = "verdict") -> list[str]:
    head = ["what", *(h for h, _ in columns), "target", verdict_heading]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = []
        for _, key in columns:
            if key.startswith("ratio"):
                cells.append(f"{r[key]:.2f}x" if r.get(key) is not None else "-")
            elif key.startswith("reference") and not with_ref:
                cells.append("n/a")
            else:
                cells.append(_fmt(r.get(key)))
        lines.append("| " + " | ".join([r["label"], *cells, _target(r), _verdicts(r, verdict_keys)]) + " |")
    return lines


def render_markdown(report: dict) -> str:
    """The tables: every setup side by side; without vnetd; vnetd with a large address pool."""
    with_ref = bool(report.get("with_reference", True))
    modes = report.get("modes", ["bridge"])
    by_section: dict[str, list[dict]] = {}
    for r in report["rows"]:
        by_section.setdefault(r.get("section", "main"), []).append(r)
    columns = [c for mode in modes for c in _COLUMNS[mode]]
    verdict_keys = ["verdict" if mode == "bridge" else f"verdict_{mode}" for mode in modes]
    heading = "verdict" if len(modes) == 1 else f"verdict ({' / '.join(modes)})"
    lines = _table(by_section.get("main", []), columns, verdict_keys, with_ref, heading)
    floor = f"{report['kernel_floor_ms']:.1f}"
    first = next(key for _, key in columns if key in ("vnetd", "vnetd-transparent"))
    lines.append("| kernel floor: one pod's netlink work, raw socket, warm (ms) | "
                 + " | ".join(floor if key == first else "" for _, key in columns) + " | | |")
    sizes = report.get("sizes", {})
    if by_section.get("fallback"):
        lines += ["", "Without vnetd (bridge mode; every call starts the plugin's Python):", ""]
        lines += _table(by_section["fallback"], _FALLBACK_COLUMNS, ["verdict"], with_ref)
    if by_section.get("pool"):
        small, large = sizes.get("small_pool"), sizes.get("pool")
        lines += ["", f"vnetd (bridge mode) with a pool of {large} addresses against one of {small}:", ""]
        lines += _table(by_section["pool"], [(f"{small}-address pool", "pool-small"),
                                             (f"{large}-address pool", "pool-large"),
                                             (f"{large} / {small}", "ratio")], ["verdict"], True)
    summary = report.get("targets")
    if summary and summary.get("judged"):
        missed = summary["not_met"]
        lines += ["", f"targets met: {summary['met']} of {summary['judged']}"
                  + (f"; not met: {'; '.join(missed)}" if missed else "")]
    elif summary is not None:
        lines += ["", "targets met: none judged (ratios need the reference; most targets are defined for the "
                  "default sizes)"]
    return "\n".join(lines)


def bench(
    pods: int = typer.Option(50, "--pods", help="Pods in the sequential ADD/DEL scenario."),
    burst: int = typer.Option(30, "--burst", help="Size of the first burst (ADDs launched at once)."),
    big_burst: int = typer.Option(110, "--big-burst", help="Size of the second burst (Kubernetes' default max-pods)."),
    callers: int = typer.Option(8, "--callers", help="Calls launched at once in the concurrent-callers scenario "
                                "(the reference and vnet without vnetd); 0 skips it."),
    rounds: int = typer.Option(3, "--rounds", help="Rounds of the concurrent-callers scenario."),
    pool: int = typer.Option(250, "--pool", help="Addresses in the large pool of the pool phase (vnetd holding "
                             "that many endpoints); 0 skips the phase."),
    small_pool: int = typer.Option(30, "--small-pool", help="Addresses in the small pool it is compared with."),
    pool_calls: int = typer.Option(25, "--pool-calls", help="Pods added, then deleted, one at a time at the end "
                                   "of each pool (the per-call cost with the pool nearly full)."),
    output: Optional[Output] = output_option("the full results"),
    as_json: bool = JSON_OPTION,
    no_reference: bool = typer.Option(False, "--no-reference", help="Skip the reference plugins."),
    mode: str = typer.Option("both", "--mode",
                             help="bridge, transparent, or both (each against its reference: bridge, ptp)."),
) -> None:
    """Benchmark vnet (+vnetd) against the reference plugins, in throwaway namespaces.

    Every call is a real exec of the plugin, as a runtime makes it. Scenarios: sequential ADD and
    DEL; bursts of ADDs, then DELs, launched at once; without vnetd, several callers at once; vnetd
    holding a large address pool against a small one (per-call cost, RSS). A DEL is reported in
    two phases: answered (what the runtime waits for) and teardown done (the pod's veth gone from
    the node and its address released; vnetd answers first and tears down behind); every
    scenario waits for the teardown before the next starts. Targets are ratios to the reference
    in the same run (or a limit in ms or MiB), shown with a verdict, and apply only to the sizes
    they are defined for (the defaults).
    """
    modes = {"both": ("bridge", "transparent"), "bridge": ("bridge",), "transparent": ("transparent",)}.get(mode)
    if modes is None:
        error(f"--mode must be bridge, transparent or both, not {mode!r}", code=EXIT_BAD_INPUT)
    if min(pods, burst, big_burst, rounds) < 1:
        error("--pods, --burst, --big-burst and --rounds must be at least 1", code=EXIT_BAD_INPUT)
    if min(callers, pool) < 0:
        error("--callers and --pool must be 0 (skip) or more", code=EXIT_BAD_INPUT)
    if pool and not 1 <= pool_calls <= small_pool <= pool:
        error(f"the pool phase needs 1 <= --pool-calls ({pool_calls}) <= --small-pool ({small_pool}) "
              f"<= --pool ({pool})", "or --pool 0 to skip it", EXIT_BAD_INPUT)
    if os.geteuid() != 0:
        error("`vnetctl bench` needs root: it builds network namespaces", "run it as root", EXIT_PERMISSION)
    as_json = want_json(output, as_json)
    from ..bench.run import run_bench

    def progress(msg: str) -> None:
        if not as_json:
            typer.echo(f"... {msg}", err=True)

    report = run_bench(pods, burst, big_burst, progress, with_reference=not no_reference, modes=modes,
                       callers=callers, rounds=rounds, pool=pool, small_pool=small_pool, pool_calls=pool_calls)
    if as_json:
        emit_json(report)
        return
    typer.echo(render_markdown(report))
    m = report["machine"]
    typer.echo(f"\nfront door: {report['front_door']}; {m['cpus']} CPUs, kernel {m['kernel']}, Python {m['python']}; "
               f"took {report['seconds']} s; load average {m['load_before']:.1f} at the start, "
               f"{m['load_after']:.1f} at the end")
    if report["failed_calls"]:
        error(f"{report['failed_calls']} calls failed: see -o json for the first error of each scenario")
