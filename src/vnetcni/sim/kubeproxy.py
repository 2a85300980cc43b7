"""kube-proxy's iptables layout on the simulated nodes: Services over the vnet dataplane.

What `kube-proxy --proxy-mode=iptables` writes on every node, rule for rule (chain names hashed as
kube-proxy hashes them, the same matches, marks and comments):

  nat   PREROUTING, OUTPUT -> KUBE-SERVICES
        KUBE-SERVICES  -d CLUSTER-IP -p tcp --dport PORT -> KUBE-SVC-<hash>
                       (last) -m addrtype --dst-type LOCAL -> KUBE-NODEPORTS
        KUBE-NODEPORTS -p tcp --dport NODEPORT -> KUBE-EXT-<hash> (KUBE-MARK-MASQ, then KUBE-SVC)
        KUBE-SVC-<hash> ! -s <VNet subnet> -> KUBE-MARK-MASQ (traffic from outside the cluster)
                        sessionAffinity ClientIP: -m recent --rcheck per endpoint first
                        endpoint i of n: -m statistic --mode random --probability 1/(n-i)
        KUBE-SEP-<hash> -s ENDPOINT -> KUBE-MARK-MASQ (hairpin: a pod calling itself)
                        DNAT --to-destination ENDPOINT:TARGETPORT (+ -m recent --set with affinity)
        POSTROUTING -> KUBE-POSTROUTING: MASQUERADE what carries mark 0x4000
  filter FORWARD -> KUBE-FORWARD: drop INVALID, accept marked and established traffic

Rules are written with iptables-restore --noflush inside each node's namespace: the reference
portmap plugin's chains in the same tables stay untouched, chains of removed Services are deleted.
The masquerade exists only inside the simulated nodes, whose namespaces route nowhere but the
fabric. The Services live in <fabric dir>/services.json; their endpoints are pods of the fabric
(by name), resolved to the pods' addresses each time the rules are written.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
from dataclasses import asdict, dataclass, field

from ..state.durable import DurableDocument
from . import kernel, naming
from .errors import SimError
from .model import FabricRecord
from .pods import list_pods, pod_key

SERVICE_CIDR = "10.96.0.0/16"
FIRST_CLUSTER_IP = 10  # 10.96.0.10 first, as kubeadm's kube-dns
NODE_PORTS = range(30000, 32768)
MASQ_MARK = "0x4000"
AFFINITY_SECONDS = 10800  # kube-proxy's default sessionAffinityConfig.clientIP.timeoutSeconds
SERVICE_FILE = "services.json"
AFFINITIES = ("None", "ClientIP")


@dataclass
class Service:
    namespace: str
    name: str
    clusterIP: str
    port: int
    targetPort: int
    endpoints: list[str] = field(default_factory=list)  # pod keys "namespace/name"
    nodePort: int = 0  # 0: a ClusterIP Service
    sessionAffinity: str = "None"
    portName: str = "http"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def port_name(self) -> str:
        """kube-proxy's ServicePortName.String(): namespace/name:port."""
        return f"{self.key}:{self.portName}" if self.portName else self.key


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def svc_chain(svc: Service) -> str:
    return "KUBE-SVC-" + _hash(svc.port_name + "tcp")


def ext_chain(svc: Service) -> str:
    return "KUBE-EXT-" + _hash(svc.port_name + "tcp")


def sep_chain(svc: Service, endpoint: str) -> str:
    return "KUBE-SEP-" + _hash(svc.port_name + "tcp" + endpoint)


# --- the rules (pure) -----------------------------------------------------------------------
def rules(services: list[Service], addresses: dict[str, str], cluster_cidr: str) -> tuple[str, str, list[str]]:
    """(nat table body, filter table body, chains they declare) for these Services; `addresses`
    maps a pod key to its address (endpoints whose pod is gone are left out, as kube-proxy does
    with endpoints that are not ready)."""
    chains = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    nat = [
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
    ]
    for svc in sorted(services, key=lambda s: s.key):
        name = svc.port_name
        svc_c = svc_chain(svc)
        endpoints = [f"{addresses[p]}:{svc.targetPort}" for p in svc.endpoints if p in addresses]
        if not endpoints:
            continue  # kube-proxy REJECTs in the filter table; here the call times out
        chains.append(svc_c)
        nat.append(f'-A KUBE-SERVICES -m comment --comment "{name} cluster IP" -m tcp -p tcp '
                   f"-d {svc.clusterIP}/32 --dport {svc.port} -j {svc_c}")
        nat.append(f'-A {svc_c} ! -s {cluster_cidr} -m comment --comment "{name} cluster IP" -m tcp -p tcp '
                   f"-d {svc.clusterIP}/32 --dport {svc.port} -j KUBE-MARK-MASQ")
        if svc.nodePort:
            ext = ext_chain(svc)
            chains.append(ext)
            nat.append(f'-A KUBE-NODEPORTS -m comment --comment "{name}" -m tcp -p tcp --dport {svc.nodePort} '
                       f"-j {ext}")
            nat.append(f'-A {ext} -m comment --comment "masquerade traffic for {name} external destinations" '
                       "-j KUBE-MARK-MASQ")
            nat.append(f"-A {ext} -j {svc_c}")
        seps = [(ep, sep_chain(svc, ep)) for ep in endpoints]
        affinity = svc.sessionAffinity == "ClientIP"
        if affinity:
            for ep, sep in seps:
                nat.append(f'-A {svc_c} -m comment --comment "{name} -> {ep}" -m recent --name {sep} '
                           f"--mask 255.255.255.255 --rsource --rcheck --seconds {AFFINITY_SECONDS} --reap -j {sep}")
        for i, (ep, sep) in enumerate(seps):
            left = len(seps) - i
            pick = f"-m statistic --mode random --probability {1.0 / left:0.10f} " if left > 1 else ""
            nat.append(f'-A {svc_c} -m comment --comment "{name} -> {ep}" {pick}-j {sep}')
        for ep, sep in seps:
            chains.append(sep)
            ip = ep.rsplit(":", 1)[0]
            nat.append(f'-A {sep} -m comment --comment "{name}" -s {ip}/32 -j KUBE-MARK-MASQ')
            remember = f"-m recent --set --name {sep} --mask 255.255.255.255 --rsource " if affinity else ""
            nat.append(f'-A {sep} -m comment --comment "{name}" {remember}-m tcp -p tcp '
                       f"-j DNAT --to-destination {ep}")
    nat.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the '
               'last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    filt = [
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {MASQ_MARK}/{MASQ_MARK} '
        "-j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack '
        "--ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]
    return "\n".join(nat), "\n".join(filt), chains


JUMPS = {
    "nat": [("PREROUTING", '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'),
            ("OUTPUT", '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'),
            ("POSTROUTING", '-m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING')],
    "filter": [("FORWARD", '-m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD')],
}


def restore_input(nat: str, filt: str, chains: list[str], saved: str) -> str:
    """iptables-restore --noflush input: our chains declared (so flushed) and filled, the chains of
    Services that are gone deleted, the jumps from the built-in chains added once."""
    existing: dict[str, set[str]] = {"nat": set(), "filter": set()}
    table = ""
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif table in existing:
            existing[table].add(line)
    out = []
    for tbl, body, ours in (("nat", nat, chains), ("filter", filt, ["KUBE-FORWARD"])):
        have = {line.split()[0][1:] for line in existing[tbl] if line.startswith(":")}
        stale = sorted(c for c in have if c.startswith("KUBE-") and c not in ours and c != "KUBE-FORWARD"
                       and tbl == "nat")
        out.append(f"*{tbl}")
        out += [f":{c} - [0:0]" for c in ours + stale]
        out += [f"-X {c}" for c in stale]
        for chain, rule in JUMPS[tbl]:
            if f"-A {chain} {rule}" not in existing[tbl]:
                out.append(f"-I {chain} 1 {rule}")
        out.append(body)
        out.append("COMMIT")
    return "\n".join(out) + "\n"


# --- the Services of a fabric ---------------------------------------------------------------
def _store(fabric: FabricRecord) -> DurableDocument:
    return DurableDocument(os.path.join(fabric.directory, SERVICE_FILE), "vnet-sim-services", 1,
                           lambda: {"services": {}})


def list_services(fabric: FabricRecord) -> list[Service]:
    return [Service(**s) for _, s in sorted(_store(fabric).read()["services"].items())]


def add_service(fabric: FabricRecord, name: str, pods: list[str], port: int, target_port: int,
                namespace: str = "default", node_port: int | None = None, affinity: str = "None",
                cluster_ip: str = "") -> Service:
    """Create a Service whose endpoints are these pods (names in `namespace`, or namespace/name)
    and write every node's rules. node_port: None for a ClusterIP Service, 0 to pick one."""
    naming.check_pod_name("service name", name)
    naming.check_pod_name("namespace", namespace)
    if affinity not in AFFINITIES:
        raise ValueError(f"session affinity must be one of {', '.join(AFFINITIES)}, got {affinity!r}")
    for what, value in (("port", port), ("target port", target_port)):
        if not 1 <= value <= 65535:
            raise ValueError(f"{what} must be between 1 and 65535, got {value}")
    if not pods:
        raise ValueError("a Service needs at least one endpoint pod")
    known = {p.key for p in list_pods(fabric)}
    endpoints = [p if "/" in p else pod_key(namespace, p) for p in pods]
    missing = [p for p in endpoints if p not in known]
    if missing:
        raise SimError(f"no pod {', '.join(missing)} in fabric {fabric.name!r}")
    with _store(fabric).transaction() as doc:
        taken = [Service(**s) for s in doc["services"].values()]
        key = f"{namespace}/{name}"
        if key in doc["services"]:
            raise SimError(f"service {key} already exists in fabric {fabric.name!r}")
        svc = Service(namespace=namespace, name=name, port=port, targetPort=target_port, endpoints=endpoints,
                      clusterIP=cluster_ip or _free_cluster_ip(taken),
                      nodePort=_node_port(node_port, taken), sessionAffinity=affinity)
        if cluster_ip and any(s.clusterIP == cluster_ip for s in taken):
            raise SimError(f"cluster IP {cluster_ip} is taken")
        if cluster_ip and ipaddress.ip_address(cluster_ip) not in ipaddress.ip_network(SERVICE_CIDR):
            raise ValueError(f"cluster IP {cluster_ip} is outside the service range {SERVICE_CIDR}")
        doc["services"][key] = asdict(svc)
    sync(fabric)
    return svc


def delete_service(fabric: FabricRecord, name: str, namespace: str = "default") -> Service:
    with _store(fabric).transaction() as doc:
        raw = doc["services"].pop(f"{namespace}/{name}", None)
    if raw is None:
        raise SimError(f"no service {namespace}/{name} in fabric {fabric.name!r}")
    sync(fabric)
    return Service(**raw)


def endpoint_gone(fabric: FabricRecord, pod: str) -> None:
    """A deleted pod leaves every Service it backed (kube-proxy follows the EndpointSlices)."""
    if not os.path.exists(os.path.join(fabric.directory, SERVICE_FILE)):
        return
    if any(pod in s.endpoints for s in list_services(fabric)):
        sync(fabric)


def _free_cluster_ip(taken: list[Service]) -> str:
    used = {s.clusterIP for s in taken}
    net = ipaddress.ip_network(SERVICE_CIDR)
    for offset in range(FIRST_CLUSTER_IP, net.num_addresses - 1):
        ip = str(net.network_address + offset)
        if ip not in used:
            return ip
    raise SimError(f"the service range {SERVICE_CIDR} is full")


def _node_port(wanted: int | None, taken: list[Service]) -> int:
    if wanted is None:
        return 0
    used = {s.nodePort for s in taken}
    if wanted:
        if wanted not in NODE_PORTS:
            raise ValueError(f"node port must be between {NODE_PORTS.start} and {NODE_PORTS.stop - 1}, got {wanted}")
        if wanted in used:
            raise SimError(f"node port {wanted} is taken")
        return wanted
    return next(p for p in NODE_PORTS if p not in used)


def sync(fabric: FabricRecord) -> None:
    """Write every node's rules from the fabric's Services and the pods' current addresses."""
    addresses = {p.key: p.address for p in list_pods(fabric)}
    nat, filt, chains = rules(list_services(fabric), addresses, fabric.subnet)
    for node in fabric.nodes:
        saved = kernel.exec_in(node.netns, ["iptables-save", "-t", "nat"]).stdout + \
            kernel.exec_in(node.netns, ["iptables-save", "-t", "filter"]).stdout
        kernel.exec_in(node.netns, ["iptables-restore", "-w", "5", "--noflush"],
                       stdin=restore_input(nat, filt, chains, saved))
