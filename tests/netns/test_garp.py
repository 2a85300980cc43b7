"""A new pod's gratuitous ARP. vnetd has it sent once the ADD is answered (not from inside the
request that brings the pod's link up, as arp_notify does): the link is given the MAC it has, and
the kernel sends the frame it sends at link up; a neighbour that holds a stale entry for the
pod's address (a reused address) learns the new pod's MAC, through vnetd and without it."""

from __future__ import annotations

import os
import socket
import struct
import subprocess

import pytest

from support.cni import metadata_xml, ns_exec, run_plugin, wait_for
from support.vnetd import Daemon
from vnetcni.dataplane.netns import entered
from vnetcni.dataplane.rtnl import RtnlChannel

BOGUS_MAC = "02:00:5e:00:00:99"
ETH_P_ARP = 0x0806


def _arp_listener(ns: str, ifname: str) -> socket.socket:
    """A packet socket receiving the ARP frames that arrive on `ifname` in namespace `ns`."""
    with entered(f"/run/netns/{ns}"):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((ifname, ETH_P_ARP))
    sock.settimeout(10)  # a deadline for a frame that never comes, not a speed check
    return sock


def _next_garp(sock: socket.socket) -> bytes:
    """The next gratuitous ARP request received (sender and target address the same)."""
    while True:
        data = sock.recv(2048)
        op, = struct.unpack_from("!H", data, 20)
        if op == 1 and data[28:32] == data[38:42]:
            return data


def test_the_same_mac_set_again_announces_what_link_up_announces(namespaces):
    """What vnetd relies on: with arp_notify on, setting a link's MAC to the one it has makes
    the kernel send the gratuitous ARP it sends when the link comes up, for each IPv4 address."""
    ns = namespaces.make("node")
    subprocess.run(["ip", "-n", ns, "link", "add", "vntga", "type", "veth", "peer", "name", "vntgb"], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "vntgb", "up"], check=True)
    listener = _arp_listener(ns, "vntgb")
    with listener, RtnlChannel(f"/run/netns/{ns}") as ch:
        link = ch.link("vntga")
        ch.request_all([ch.arp_notify_request(link.index), ch.address_request(link.index, "10.9.0.5/24"),
                        ch.address_request(link.index, "10.9.1.5/24"), ch.up_request(link.index)])
        at_up = {_next_garp(listener) for _ in range(2)}
        ch.request_all([ch.announce_request(link.index, link.mac)])
        again = {_next_garp(listener) for _ in range(2)}
        assert ch.link("vntga").mac == link.mac
    assert again == at_up and {socket.inet_ntoa(f[28:32]) for f in again} == {"10.9.0.5", "10.9.1.5"}
    assert all(f[6:12] == f[22:28] == bytes.fromhex(link.mac.replace(":", "")) for f in again)


def _neighbour_mac(ns: str, address: str) -> str:
    fields = ns_exec(ns, "ip", "neigh", "show", address, "dev", "eth0").stdout.split()
    return fields[fields.index("lladdr") + 1] if "lladdr" in fields else ""


@pytest.mark.parametrize("daemon", [True, False], ids=["vnetd", "in-process"])
def test_a_neighbour_with_a_stale_entry_learns_the_new_pods_mac(cni_bin, namespaces, pod_ns, tmp_path, daemon):
    node = namespaces.make("node")
    pool = [f"10.240.0.{i}" for i in range(36, 46)]
    md = tmp_path / "interfaces.xml"
    md.write_text(metadata_xml("000D3A51C490", "10.240.0.35", pool))
    sd = str(tmp_path / "state")
    os.makedirs(sd)
    conf = {"cniVersion": "1.0.0", "name": "vntnet", "type": "vnet", "bridge": "vntbr0", "stateDir": sd,
            "ipam": {"type": "vnet-ipam", "metadataFile": str(md), "reuseCooldownSeconds": 0}}
    vnet = os.path.join(cni_bin, "vnet")
    vnetd = Daemon(node, sd, str(tmp_path / "vnetd.log"))
    if daemon:
        vnetd.start()
    try:
        _, first_path = pod_ns()  # the node's first pod sets the bridge up
        assert run_plugin(vnet, "ADD", conf, node=node, container_id="first", netns=first_path, cni_path=cni_bin).ok
        # A neighbour on the bridge (a host of the VNet, say) that still has the MAC of an earlier
        # pod for every address of the pool. Not a pod of ours: a pod's own late announcement
        # (vnetd's, after its answer) would flush its neighbour table, the entries planted too.
        watcher = namespaces.make("pod")
        subprocess.run(["ip", "-n", node, "link", "add", "vntgw0", "type", "veth", "peer", "name", "eth0",
                        "netns", watcher], check=True)
        subprocess.run(["ip", "-n", node, "link", "set", "vntgw0", "master", "vntbr0", "up"], check=True)
        script = ("addr add 10.240.0.99/16 dev eth0\nlink set eth0 up\n"
                  + "".join(f"neigh replace {a} lladdr {BOGUS_MAC} dev eth0 nud stale\n" for a in pool))
        subprocess.run(["ip", "-n", watcher, "-batch", "-"], input=script.encode(), check=True)
        _, path = pod_ns()
        res = run_plugin(vnet, "ADD", conf, node=node, container_id="new", netns=path, cni_path=cni_bin)
        assert res.ok, res
        address = res.out["ips"][0]["address"].split("/")[0]
        mac, = [i["mac"] for i in res.out["interfaces"] if i.get("sandbox")]
        wait_for(lambda: _neighbour_mac(watcher, address) == mac, what=f"the watcher's entry for {address} -> {mac}")
        for cid in ("new", "first"):
            assert run_plugin(vnet, "DEL", conf, node=node, container_id=cid, netns="", cni_path=cni_bin).ok
        if daemon:
            assert "after its answer" not in open(tmp_path / "vnetd.log").read()
    finally:
        vnetd.stop()
