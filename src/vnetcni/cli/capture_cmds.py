"""`vnetctl capture` and `vnetctl trace`: see a pod's packets, and find where a flow got lost.

Progress and diagnostics go to stderr only, so `vnetctl capture POD -o - | tshark -r -` gets
nothing but pcap on stdout. Errors are one readable line (plus a hint) and a distinct exit code:
1 capture failed, 2 bad input (filter, address, options), 3 unknown pod / pod on another node,
4 no permission, 5 tcpdump missing; trace exits 8 when the flow did not complete and 9 when the
destination refused it (it was reached, nothing listens on the port: a TCP reset came back).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional

import typer

from .common import EXIT_FLOW_INCOMPLETE, EXIT_REFUSED, JSON_OPTION, Output, guarded, output_option, say, want_json

_say = say
_guarded = guarded

CONF_DIR_OPTION = typer.Option(None, "--cni-conf-dir", help="Where to look for the installed conflist "
                               "(default /etc/cni/net.d).")


def _where(state_dir: Optional[str], cni_conf_dir: Optional[str], node: Optional[str],
           fabric: Optional[str]) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """(state dir, node, fabric) to look for the pod with, found as the node commands find their
    node (said on stderr). Inside a simulated node that is the node of its fabric; without any
    vnet node here the pod is still found through its network namespace."""
    if node or fabric:
        return state_dir, node, fabric
    from .node_cmds import locate

    if state_dir or cni_conf_dir:
        return locate(state_dir, cni_conf_dir).state_dir, None, None
    from .common import CliError

    try:
        found = locate(None, None)
    except CliError as exc:
        say(f"{exc.message}; looking for the pod through its network namespace")
        return None, None, None
    if found.fabric:
        return None, found.node, found.fabric
    return found.state_dir, None, None


def _ordered(where: tuple) -> tuple:
    """find_pod's argument order: (node, fabric, state dir)."""
    state, node_name, fabric_name = where
    return node_name, fabric_name, state


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
    state_dir: Optional[str] = typer.Option(None, "--state-dir", help="vnet state directory (default: found "
                                            "from the installed conflist or the running vnetd)."),
    cni_conf_dir: Optional[str] = CONF_DIR_OPTION,
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
        found, _ = find_pod(pod, namespace, *_ordered(_where(state_dir, cni_conf_dir, node, fabric)))
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
    if report.protocol == "tcp":
        from ..capture.verdict import TCP_FLAG_LEGEND

        console.print(f"{TCP_FLAG_LEGEND}; ARP req/rep: ARP requests and replies for the two addresses",
                      highlight=False)
    if report.outcome is not None:
        console.print(f"generated flow: {report.outcome.result}")
    colour = "green" if report.complete else ("red" if report.refused else "yellow")
    console.print(f"[{colour}]{report.verdict}[/{colour}]", soft_wrap=True)


def _console():
    from .common import console

    return console()


def trace_exit_code(report) -> int:
    """0 delivered and answered, 9 refused by the destination (reached: nothing listens on the
    port), 8 anything else that did not complete (lost, unanswered, reset on the way)."""
    if report.complete:
        return 0
    return EXIT_REFUSED if report.refused else EXIT_FLOW_INCOMPLETE


def trace(
    pod: str = typer.Argument(..., help="Source pod (name, NAMESPACE/NAME, address, container ID, netns)."),
    to: str = typer.Option(..., "--to", help="Destination ADDRESS[:PORT]; a port makes a TCP connect, "
                           "none an ICMP echo."),
    namespace: Optional[str] = typer.Option(None, "-n", "--namespace", help="Kubernetes namespace of the pod."),
    node: Optional[str] = typer.Option(None, "--node", help="Node of the simulated VNet the pod runs on."),
    fabric: Optional[str] = typer.Option(None, "--fabric", help="Simulated VNet name (or fabric.json path)."),
    state_dir: Optional[str] = typer.Option(None, "--state-dir", help="vnet state directory (default: found "
                                            "from the installed conflist or the running vnetd)."),
    cni_conf_dir: Optional[str] = CONF_DIR_OPTION,
    wait: Optional[float] = typer.Option(None, "--wait", min=0.1, max=600,
                                         help="Do not make the flow: wait up to SECONDS for it."),
    timeout: float = typer.Option(2.0, "--timeout", min=0.1, max=60, help="Seconds the generated flow waits for an answer."),
    output: Optional[Output] = output_option("the report"),
    as_json: bool = JSON_OPTION,
    pcap_dir: Optional[str] = typer.Option(None, "--pcap-dir", help="Keep each hop's pcap in this directory."),
) -> None:
    """Capture on every hop of a pod's flow at once (pod veth, bridge, uplink, and the peer node's),
    make or wait for the flow, and report hop by hop where it was seen and last seen.

    Exit codes: 0 delivered and answered, 9 refused (the destination was reached and answered with a
    TCP reset: nothing listens on the port), 8 otherwise not completed (lost, unanswered, reset on
    the way; see the report), 1-5 as for capture.
    """

    def body() -> int:
        from ..capture import tools
        from ..capture.hops import find_destination, plan
        from ..capture.targets import find_pod
        from ..capture.trace import run_trace

        address, port = _parse_to(to)
        tools.tcpdump_path()
        tools.require_privileges(enter_namespaces=True)
        source, fab = find_pod(pod, namespace, *_ordered(_where(state_dir, cni_conf_dir, node, fabric)))
        for note in source.notes:
            _say(note)
        _say(f"pod {source.name}: host interface {source.host.host_if} found by {source.method}")
        dest = find_destination(address, port, fab)
        report = run_trace(source, dest, plan(source, dest, fab), wait, timeout, pcap_dir, _say)
        if want_json(output, as_json):
            from .common import emit_json

            emit_json(report.to_json())
        else:
            _render(report, _console())
        return trace_exit_code(report)

    _guarded(body)


def register(app: typer.Typer) -> None:
    app.command("capture")(capture)
    app.command("trace")(trace)
