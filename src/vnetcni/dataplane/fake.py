"""An in-memory dataplane with the same behaviour as LinuxDataplane, for tests without root."""

from __future__ import annotations

import itertools

from ..cni.errors import CNIError, DATAPLANE_FAILURE
from .prereqs import NodeFacts
from .model import BridgeInfo, HostView, LinkExists, PodLink, PodLinkSpec, PodView


class FakeDataplane:
    def __init__(self) -> None:
        self.bridges: dict[str, BridgeInfo] = {}
        self.bridge_addresses: dict[str, set[str]] = {}
        self.uplinks: dict[str, str] = {"eth0": ""}  # uplink -> bridge it is enslaved to
        self.hosts: dict[str, dict] = {}  # host ifname -> {"bridge", "mac", "netns", "ifname"}
        self.pods: dict[tuple[str, str], PodView] = {}  # (netns, ifname) -> view
        self.netns: set[str] = set()
        self.facts = {"br_netfilter": True, "bridge_nf_call_iptables": 1, "ip_forward": 1}
        self.fail_on: str = ""  # inject a failure: "create" or "configure"
        self._macs = (f"02:00:00:00:{i >> 8:02x}:{i & 0xff:02x}" for i in itertools.count(1))

    def ensure_bridge(self, name: str, mtu: int, uplink: str = "", gateway: str = "") -> BridgeInfo:
        if uplink and uplink not in self.uplinks:
            raise CNIError(DATAPLANE_FAILURE, f"uplink interface {uplink!r} does not exist on this node")
        br = self.bridges.setdefault(name, BridgeInfo(name, next(self._macs)))
        if uplink:
            self.uplinks[uplink] = name
        elif gateway:
            self.bridge_addresses.setdefault(name, set()).add(gateway)
        return br

    def uplink_mtu(self, uplink: str) -> int:
        if uplink not in self.uplinks:
            raise CNIError(DATAPLANE_FAILURE, f"uplink interface {uplink!r} does not exist on this node")
        return 1500

    def create_pod_link(self, spec: PodLinkSpec) -> PodLink:
        if spec.netns not in self.netns:
            raise CNIError(DATAPLANE_FAILURE, f"cannot open netns {spec.netns}: No such file or directory")
        if spec.host_ifname in self.hosts or (spec.netns, spec.ifname) in self.pods:
            raise LinkExists(f"cannot create veth {spec.host_ifname}/{spec.ifname}: already exists")
        if self.fail_on == "create":
            raise CNIError(DATAPLANE_FAILURE, f"cannot create veth {spec.host_ifname}/{spec.ifname}: injected")
        if not spec.routed and spec.bridge not in self.bridges:
            raise CNIError(DATAPLANE_FAILURE, f"bridge {spec.bridge} vanished")
        if self.fail_on == "configure":
            raise CNIError(DATAPLANE_FAILURE, f"cannot configure pod interface {spec.ifname}: injected")
        host_mac, pod_mac = next(self._macs), next(self._macs)
        host_routes = [f"{a.split('/')[0]}/{32 if ':' not in a else 128}" for a in spec.addresses] if spec.routed else []
        self.hosts[spec.host_ifname] = {"bridge": spec.bridge, "mac": host_mac, "netns": spec.netns,
                                        "ifname": spec.ifname, "routes": host_routes,
                                        "neighbours": {a.split("/")[0]: pod_mac for a in spec.addresses
                                                       if ":" in a} if spec.routed else {}}
        self.pods[(spec.netns, spec.ifname)] = PodView(
            exists=True, mac=pod_mac, up=True, mtu=spec.mtu, addresses=list(spec.addresses),
            routes=[(dst, gw) for dst, gw in spec.routes],
            neighbours={gw: host_mac for gw in spec.host_gateways})
        return PodLink(host_mac=host_mac, pod_mac=pod_mac)

    def delete_pod_link(self, host_ifname: str) -> bool:
        host = self.hosts.pop(host_ifname, None)
        if host is None:
            return False
        self.pods.pop((host["netns"], host["ifname"]), None)
        return True

    def delete_pod_links(self, host_ifnames: list[str]) -> list[str]:
        return [name for name in host_ifnames if self.delete_pod_link(name)]

    def begin_delete_pod_link(self, host_ifname: str):
        done = self.delete_pod_link(host_ifname)
        return lambda: done

    def remove_netns(self, path: str) -> None:
        """What the kernel does when a pod's namespace goes: its veth pairs vanish."""
        self.netns.discard(path)
        for name, host in list(self.hosts.items()):
            if host["netns"] == path:
                self.delete_pod_link(name)

    def inspect_pod(self, netns: str, ifname: str) -> PodView:
        if netns not in self.netns:
            return PodView(exists=False)
        return self.pods.get((netns, ifname), PodView(exists=False))

    def node_facts(self, bridge: str) -> NodeFacts:
        return NodeFacts(bridge=bridge, bridge_exists=bridge in self.bridges, bridge_nf_flag=bridge in self.bridges,
                         **self.facts)

    def inspect_host(self, host_ifname: str) -> HostView:
        if host_ifname in self.bridges:
            return HostView(exists=True, up=True, mac=self.bridges[host_ifname].mac)
        host = self.hosts.get(host_ifname)
        if host is None:
            return HostView(exists=False)
        return HostView(exists=True, master=host["bridge"], up=True, mac=host["mac"],
                        routes=list(host["routes"]), hairpin=host.get("hairpin", bool(host["bridge"])),
                        neighbours=dict(host["neighbours"]))
