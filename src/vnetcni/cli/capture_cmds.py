"""`vnetctl capture` and `vnetctl trace`: see a pod's packets, and find where a flow got lost.

Progress and diagnostics go to stderr only, so `vnetctl capture POD -o - | tshark -r -` gets
nothing but pcap on stdout. Errors are one readable line (plus a hint) and a distinct exit code:
1 capture failed, 2 bad input (filter, address, options), 3 unknown pod / pod on another node,
4 no permission, 5 tcpdump missing; trace exits 8 when the flow did not complete.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable, Optional

import typer

EXIT_FLOW_INCOMPLETE = 8


def _say(message: str) -> None:
    print(f"vnetctl: {message}", file=sys.stderr, flush=True)


def _guarded(body: Callable[[], int]) -> None:
    """Run a command body; a CaptureError becomes a message and its exit code, never a traceback."""
    from ..capture.errors import CaptureError

    try:
        code = body()
    except CaptureError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise typer.Exit(130) from None
    except (typer.Exit, typer.Abort):
        raise
    except Exception as exc:  # noqa: BLE001 - the operator gets a sentence, not a traceback
        print(f"error: unexpected failure: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _open_output(output: Optional[str], pod_name: str) -> tuple[int, str, bool]:
    """(fd, description, created): '-' is stdout (never a terminal); no -o picks stdout when it is
    a pipe, else a file named after the pod and the time."""
    from ..capture.errors import BadInput

    if output is None:
        if not sys.stdout.isatty():
            output = "-"
        else:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in pod_name)
            output = f"capture-{safe}-{time.strftime('%Y%m%d-%H%M%S')}.pcap"
    if output == "-":
        if sys.stdout.isatty():
            raise BadInput("refusing to write pcap to a terminal", "use -o FILE, or pipe it: -o - | tshark -r -")
        sys.stdout.flush()
        return sys.stdout.fileno(), "stdout", False
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise BadInput(f"cannot write {output}: {exc.strerror}") from None
    return fd, output, True


def capture(
    pod: str = typer.Argument(..., help="Pod name (or NAMESPACE/NAME), pod address, container ID "
                              "(or unique prefix), or for other CNIs' pods a netns name/path."),
    namespace: Optional[str] = typer.Option(None, "-n", "--namespace", help="Kubernetes namespace of the pod."),
    bpf_filter: str = typer.Option("", "-f", "--filter", help="Capture filter, tcpdump syntax."),
    count: Optional[int] = typer.Option(None, "-c", "--count", min=1, help="Stop after this many packets."),
    duration: Optional[float] = typer.Option(None, "-d", "--duration", min=0.1, help="Stop after this many seconds."),
    output: Optional[str] = typer.Option(None, "-o", "--output",
                                         help="pcap file, or - for stdout (default: stdout if piped, else a new file)."),
    in_pod: bool = typer.Option(False, "--in-pod", help="Capture on the pod's eth0 inside its netns."),
    node: Optional[str] = typer.Option(None, "--node", help="Node of the simulated VNet to capture on."),
    fabric: Optional[str] = typer.Option(None, "--fabric", help="Simulated VNet name (or fabric.json path)."),
    state_dir: Optional[str] = typer.Option(None, "--state-dir", help="vnet state directory (default /var/run/vnet)."),
) -> None:
    """Capture a pod's packets as standard pcap (Ethernet), on its host veth or inside the pod.

    Exit codes: 1 capture failed, 2 bad input, 3 unknown pod or pod on another node,
    4 no permission, 5 tcpdump missing.
    """

    def body() -> int:
        from ..capture import tools
        from ..capture.session import capture_target, run_capture
        from ..capture.targets import find_pod

        tools.tcpdump_path()
        # Always: even without --node/--fabric/--in-pod, find_pod may look for the pod in a
        # running simulated VNet's node namespaces or discover it through its netns.
        tools.require_privileges(enter_namespaces=True)
        tools.check_filter(bpf_filter)
        found, _ = find_pod(pod, namespace, node, fabric, state_dir)
        for note in found.notes:
            _say(note)
        _say(f"pod {found.name}: host interface {found.host.host_if} found by {found.method} "
             f"({found.host.detail})")
        target = capture_target(found, in_pod)
        fd, where, created = _open_output(output, found.name)
        ok = False
        try:
            stats = run_capture(target, fd, bpf_filter, count, duration, _say)
            ok = True
        finally:
            if created:
                os.close(fd)
                if not ok:
                    os.unlink(where)
        dropped = f" ({stats.dropped} dropped by the kernel)" if stats.dropped else ""
        _say(f"wrote {stats.captured} packet{'s' if stats.captured != 1 else ''} to {where}{dropped}")
        return 0

    _guarded(body)


def _parse_to(value: str) -> tuple[str, Optional[int]]:
    from ..capture.endpoints import as_address
    from ..capture.errors import BadInput

    host, port = value, None
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest:
            port = rest.removeprefix(":")
    elif value.count(":") == 1:
        host, port = value.split(":")
    address = as_address(host)
    if address is None or "/" in host:
        raise BadInput(f"--to {value!r}: not an IP address (ADDRESS or ADDRESS:PORT)")
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise BadInput(f"--to {value!r}: port must be 1-65535")
        return address, int(port)
    return address, None


def _render(report, console) -> None:
    from rich.table import Table

    table = Table(title=f"{report.protocol.upper()} {report.source_address}"
                  + (f":{report.source_port}" if report.source_port else "")
                  + f" → {report.dest.description}", title_justify="left")
    for column, justify in (("#", "right"), ("node", "left"), ("interface", "left"),
                            ("role", "left"), ("→ forward", "right"), ("← reply", "right"),
                            ("ARP req/rep", "right"), ("", "left")):
        table.add_column(column, justify=justify, no_wrap=True)
    for i, hop in enumerate(report.hops):
        mark = f"◀ last seen ({report.last_seen_direction})" if hop is report.last_seen else ""
        if hop.error:
            mark = f"capture failed: {hop.error}"
        style = "green" if hop.forward or hop.reply else "red"
        fwd = f"{hop.forward} {' '.join(hop.forward_kinds)}" if hop.forward else "-"
        rep = f"{hop.reply} {' '.join(hop.reply_kinds)}" if hop.reply else "-"
        table.add_row(str(i), hop.hop.node, hop.hop.interface, hop.hop.role, fwd, rep,
                      f"{hop.arp_requests}/{hop.arp_replies}", mark, style=style)
    console.print(table)
    if report.outcome is not None:
        console.print(f"generated flow: {report.outcome.result}")
    colour = "green" if report.complete else "yellow"
    console.print(f"[{colour}]{report.verdict}[/{colour}]", soft_wrap=True)


def _console():
    """Rich on a terminal; a wide plain console when piped, so names are never cut short."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160, no_color=True)


def trace(
    pod: str = typer.Argument(..., help="Source pod (name, NAMESPACE/NAME, address, container ID, netns)."),
    to: str = typer.Option(..., "--to", help="Destination ADDRESS[:PORT]; a port makes a TCP connect, "
                           "none an ICMP echo."),
    namespace: Optional[str] = typer.Option(None, "-n", "--namespace", help="Kubernetes namespace of the pod."),
    node: Optional[str] = typer.Option(None, "--node", help="Node of the simulated VNet the pod runs on."),
    fabric: Optional[str] = typer.Option(None, "--fabric", help="Simulated VNet name (or fabric.json path)."),
    state_dir: Optional[str] = typer.Option(None, "--state-dir", help="vnet state directory (default /var/run/vnet)."),
    wait: Optional[float] = typer.Option(None, "--wait", min=0.1, max=600,
                                         help="Do not make the flow: wait up to SECONDS for it."),
    timeout: float = typer.Option(2.0, "--timeout", min=0.1, max=60, help="Seconds the generated flow waits for an answer."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    pcap_dir: Optional[str] = typer.Option(None, "--pcap-dir", help="Keep each hop's pcap in this directory."),
) -> None:
    """Capture on every hop of a pod's flow at once (pod veth, bridge, uplink, and the peer node's),
    make or wait for the flow, and report hop by hop where it was seen and last seen.

    Exit codes: 0 the flow completed, 8 it did not (see the report), 1-5 as for capture.
    """

    def body() -> int:
        from ..capture import tools
        from ..capture.hops import find_destination, plan
        from ..capture.targets import find_pod
        from ..capture.trace import run_trace

        address, port = _parse_to(to)
        tools.tcpdump_path()
        tools.require_privileges(enter_namespaces=True)
        source, fab = find_pod(pod, namespace, node, fabric, state_dir)
        for note in source.notes:
            _say(note)
        _say(f"pod {source.name}: host interface {source.host.host_if} found by {source.method}")
        dest = find_destination(address, port, fab)
        report = run_trace(source, dest, plan(source, dest, fab), wait, timeout, pcap_dir, _say)
        if as_json:
            print(json.dumps(report.to_json(), indent=2))
        else:
            _render(report, _console())
        return 0 if report.complete else EXIT_FLOW_INCOMPLETE

    _guarded(body)


def register(app: typer.Typer) -> None:
    app.command("capture")(capture)
    app.command("trace")(trace)
