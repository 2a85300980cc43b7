"""vnetctl fabric service add|del|list: Kubernetes Services on the simulated VNet, as kube-proxy's
iptables rules on every node (src/vnetcni/sim/kubeproxy.py)."""

from __future__ import annotations

from typing import List, Optional

import typer

from .common import JSON_OPTION, Output, emit_json, guarded, output_option, table, want_json
from .fabric_cmds import fabric_option

service_app = typer.Typer(help="Services on the simulated VNet: kube-proxy's iptables rules on every node.",
                          no_args_is_help=True)
NAMESPACE_OPTION = typer.Option("default", "--namespace", "-n", help="Kubernetes namespace.")


def register(fabric_app: typer.Typer) -> None:
    fabric_app.add_typer(service_app, name="service")


def _row(svc) -> dict:
    return {"service": svc.key, "clusterIP": svc.clusterIP, "port": svc.port, "targetPort": svc.targetPort,
            "nodePort": svc.nodePort or None, "sessionAffinity": svc.sessionAffinity, "endpoints": svc.endpoints}


@service_app.command("add")
def service_add(
    name: str = typer.Argument(..., help="Service name."),
    pods: List[str] = typer.Option(..., "--pod", help="An endpoint pod (repeat for several): NAME or NAMESPACE/NAME."),
    port: int = typer.Option(80, "--port", help="The Service port."),
    target_port: int = typer.Option(8080, "--target-port", help="The pods' port."),
    node_port: Optional[int] = typer.Option(None, "--node-port",
                                            help="Also a NodePort Service on this port (0: pick one in 30000-32767)."),
    affinity: str = typer.Option("None", "--session-affinity", help="None or ClientIP."),
    cluster_ip: str = typer.Option("", "--cluster-ip", help="Default: the next free one in 10.96.0.0/16."),
    namespace: str = NAMESPACE_OPTION,
    fabric: str = fabric_option(),
    output: Optional[Output] = output_option("the Service"),
    as_json: bool = JSON_OPTION,
) -> None:
    """Create a Service backed by pods of the fabric and write kube-proxy's rules on every node."""
    from ..sim import kubeproxy, model

    def body() -> int:
        svc = kubeproxy.add_service(model.load(fabric), name, pods, port, target_port, namespace=namespace,
                                    node_port=node_port, affinity=affinity, cluster_ip=cluster_ip)
        if want_json(output, as_json):
            emit_json(_row(svc))
            return 0
        where = f"{svc.clusterIP}:{svc.port}" + (f", NodePort {svc.nodePort} on every node" if svc.nodePort else "")
        typer.echo(f"service {svc.key}: {where} -> {', '.join(svc.endpoints)} port {svc.targetPort}"
                   + (" (sessionAffinity ClientIP)" if svc.sessionAffinity == "ClientIP" else ""))
        return 0

    guarded(body)


@service_app.command("del")
def service_del(name: str = typer.Argument(..., help="Service name."), namespace: str = NAMESPACE_OPTION,
                fabric: str = fabric_option(), output: Optional[Output] = output_option("the deleted Service"),
                as_json: bool = JSON_OPTION) -> None:
    """Remove a Service and its rules from every node."""
    from ..sim import kubeproxy, model

    def body() -> int:
        svc = kubeproxy.delete_service(model.load(fabric), name, namespace)
        if want_json(output, as_json):
            emit_json(dict(_row(svc), deleted=True))
        else:
            typer.echo(f"service {svc.key} deleted ({svc.clusterIP})")
        return 0

    guarded(body)


@service_app.command("list")
def service_list(fabric: str = fabric_option(), output: Optional[Output] = output_option("the Services"),
                 as_json: bool = JSON_OPTION) -> None:
    """The fabric's Services."""
    from ..sim import kubeproxy, model

    def body() -> int:
        rows = [_row(s) for s in kubeproxy.list_services(model.load(fabric))]
        if want_json(output, as_json):
            emit_json(rows)
            return 0
        table(f"services of fabric {fabric}", ["service", "cluster IP", "port", "node port", "affinity", "endpoints"],
              [[r["service"], r["clusterIP"], f"{r['port']} -> {r['targetPort']}", str(r["nodePort"] or "-"),
                r["sessionAffinity"], ", ".join(r["endpoints"])] for r in rows])
        if not rows:
            typer.echo("no services", err=True)
        return 0

    guarded(body)
