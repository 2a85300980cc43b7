"""vnet-ipam as the `ipam` of the reference `bridge` plugin, on a throwaway node namespace whose
metadata service listens on the node's own loopback: a real pod gets a pool address, CHECK
passes, DEL gives it back."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import require_tool
from support.cni import ns_exec, run_plugin
from vnetcni.ipam.metadata import render_node
from vnetcni.ipam.server import serve
from vnetcni.ipam.store import IpamStore

BRIDGE = "/usr/lib/cni/bridge"
VNET_IPAM = os.path.join(os.path.dirname(sys.executable), "vnet-ipam")


@pytest.fixture
def cni_path(tmp_path):
    """A plugin directory holding only `vnet-ipam`, searched before the reference plugins."""
    require_tool(BRIDGE)
    require_tool(VNET_IPAM)
    d = tmp_path / "cnibin"
    d.mkdir()
    os.symlink(VNET_IPAM, d / "vnet-ipam")
    return f"{d}:/usr/lib/cni"


@pytest.fixture
def node_metadata(tmp_path, node_ns):
    path = tmp_path / "interfaces.xml"
    path.write_bytes(render_node("000D3A51C490", "10.240.0.0/16", "10.240.0.35",
                                 [f"10.240.0.{i}" for i in range(36, 66)]))
    srv = serve("127.0.0.1", 0, str(path), netns_path=f"/run/netns/{node_ns}")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_bridge_pod_gets_a_pool_address_and_del_returns_it(node_ns, pod_ns, state_dir, cni_path, node_metadata,
                                                          version):
    pod, netns = pod_ns()
    conf = {"cniVersion": version, "name": "vntbrnet", "type": "bridge", "bridge": "vntbr0", "isGateway": False,
            "ipMasq": False,
            "ipam": {"type": "vnet-ipam", "metadataUrl": node_metadata.url, "stateDir": state_dir,
                     "reuseCooldownSeconds": 0}}
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0"
    res = run_plugin(BRIDGE, "ADD", conf, node=node_ns, container_id="vntc1", netns=netns, cni_path=cni_path,
                     args=args)
    assert res.ok, res
    [ip] = res.out["ips"]
    assert (ip["address"], ip["gateway"]) == ("10.240.0.36/16", "10.240.0.1")
    assert node_metadata.requests == 1  # the node's own metadata service answered

    shown = ns_exec(pod, "ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout
    assert "inet 10.240.0.36/16" in shown
    assert "default via 10.240.0.1" in ns_exec(pod, "ip", "route").stdout
    [alloc] = IpamStore(state_dir).read().allocations.values()
    assert (alloc.container_id, alloc.pod, alloc.address) == ("vntc1", "shop/web-0", "10.240.0.36/16")

    check = run_plugin(BRIDGE, "CHECK", {**conf, "prevResult": res.out}, node=node_ns, container_id="vntc1",
                       netns=netns, cni_path=cni_path, args=args)
    assert check.ok, check

    gone = run_plugin(BRIDGE, "DEL", {**conf, "prevResult": res.out}, node=node_ns, container_id="vntc1",
                      netns=netns, cni_path=cni_path, args=args)
    assert gone.ok, gone
    assert IpamStore(state_dir).read().allocations == {}
    assert "10.240.0.36" not in ns_exec(pod, "ip", "-o", "addr").stdout
    # containerd's second DEL: no netns, no prevResult
    again = run_plugin(BRIDGE, "DEL", conf, node=node_ns, container_id="vntc1", netns="", cni_path=cni_path)
    assert again.ok, again
