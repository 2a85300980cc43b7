"""Reconciliation prunes only on positive evidence; endpoint records are typed and validated."""

from __future__ import annotations

import json
import os

import pytest

from vnetcni.cni import dispatch
from vnetcni.dataplane.fake import FakeDataplane
from vnetcni.ipam.model import Allocation, IpamState, NodePool
from vnetcni.ipam.store import IpamStore
from vnetcni.plugins.endpoints import EndpointRecord, EndpointStore, host_ifname
from vnetcni.plugins.reconcile import INIT_PID_NS_INO, HostView, propagated_mount, reconcile
from vnetcni.plugins.vnet import VnetPlugin

NOW = 1_800_000_000.0
BOOT = "11111111-2222-3333-4444-555555555555"


def record(cid: str, ip: str, netns: str, **extra) -> EndpointRecord:
    return EndpointRecord("vntnet", cid, "eth0", host_ifname("vntnet", cid, "eth0"), "azure0",
                          ips=[ip], netns=netns, ipam="vnet-ipam", boot_id=BOOT, **extra)


@pytest.fixture
def node(tmp_path):
    """A state dir with vnet-ipam allocations and records, a fake dataplane, a fake host root."""
    sd = str(tmp_path / "state")
    host_root = tmp_path / "host"
    (host_root / "vnt-nowhere").mkdir(parents=True)  # the host's netns directory (not a mount here)
    store = IpamStore(sd)

    def seed(state: IpamState) -> None:
        state.pool = NodePool("10.240.0.0/16", "10.240.0.1", "10.240.0.35", "00:0d:3a:51:c4:90",
                              tuple(f"10.240.0.{i}" for i in range(36, 46)))

    store.apply(seed)
    dp = FakeDataplane()
    dp.ensure_bridge("azure0", 1500)
    return sd, dp, host_root


def attach(sd, dp, cid: str, ip: str, netns: str, veth: bool = True, **extra) -> EndpointRecord:
    rec = record(cid, ip, netns, **extra)
    EndpointStore(sd).put(rec)
    IpamStore(sd).apply(lambda st: st.allocations.__setitem__(
        f"vntnet/{cid}/eth0", Allocation(ip, "10.240.0.1", "vntnet", cid, "eth0", NOW - 100)))
    if veth:  # the pod's veth, made as the fake dataplane makes one
        from vnetcni.dataplane.model import PodLinkSpec

        dp.netns.add(netns)
        dp.create_pod_link(PodLinkSpec(netns=netns, ifname="eth0", host_ifname=rec.host_ifname, bridge="azure0",
                                       mtu=1500, addresses=(ip,), routes=()))
        dp.netns.discard(netns)  # the fake's netns set is the pod's, not what the reconciler sees
    return rec


def host(root, in_host_pid_ns=True) -> HostView:
    return HostView(root=str(root), pid_ns_inode=INIT_PID_NS_INO if in_host_pid_ns else 4026532000)


def test_cannot_see_is_not_gone(node):
    """From another mount/PID namespace every netns path is missing: nothing may be pruned."""
    sd, dp, root = node
    attach(sd, dp, "live", "10.240.0.36/16", "/vnt-nowhere/vnt-missing-1")  # veth exists: a live pod
    attach(sd, dp, "noveth", "10.240.0.37/16", "/vnt-nowhere/vnt-missing-2", veth=False)
    done = reconcile(sd, dp, clock=lambda: NOW, host=host(root, in_host_pid_ns=False), this_boot=BOOT)
    assert done.pruned == [] and done.kept == 2
    assert [u.record.container_id for u in done.unverified] == ["noveth"]
    assert "not visible here" in done.unverified[0].why
    assert len(EndpointStore(sd).all()) == 2 and len(IpamStore(sd).read().allocations) == 2


def test_a_visible_pod_namespace_shows_the_directory_is_the_runtimes(node, pod_netns_dir):
    """Without the host's root: the netns directory is trusted when another pod's namespace is
    visible in it (an empty or private copy of /run/netns shows none)."""
    sd, dp, root = node
    directory, live_path = pod_netns_dir
    attach(sd, dp, "live", "10.240.0.36/16", live_path, veth=False)  # veth gone, netns alive: kept
    attach(sd, dp, "gone", "10.240.0.37/16", os.path.join(directory, "vnt-gone"), veth=False)
    done = reconcile(sd, dp, clock=lambda: NOW, host=host(root, in_host_pid_ns=False), this_boot=BOOT)
    assert [p.record.container_id for p in done.pruned] == ["gone"] and done.kept == 1
    assert "is the runtime's" in done.pruned[0].why


def test_not_in_the_nodes_network_namespace_nothing_is_pruned(node):
    sd, dp, root = node
    attach(sd, dp, "a", "10.240.0.36/16", "/vnt-nowhere/vnt-gone", veth=False)
    dp.bridges.clear()  # the record's bridge is not here either: wrong network namespace
    done = reconcile(sd, dp, clock=lambda: NOW, host=host(root), this_boot=BOOT)
    assert done.pruned == [] and "not be the node's network namespace" in done.unverified[0].why


@pytest.fixture
def pod_netns_dir(tmp_path):
    """A directory holding one live network namespace (a symlink to ours)."""
    d = tmp_path / "netns"
    d.mkdir()
    os.symlink("/proc/self/ns/net", d / "vnt-live")
    return str(d), str(d / "vnt-live")


def test_veth_present_keeps_the_record_even_when_the_netns_is_gone_on_the_host(node):
    sd, dp, root = node
    attach(sd, dp, "a", "10.240.0.36/16", "/vnt-nowhere/vnt-gone")
    done = reconcile(sd, dp, clock=lambda: NOW, host=host(root), this_boot=BOOT)
    assert done.pruned == [] and done.kept == 1


def test_netns_alive_on_the_host_keeps_the_record(node):
    sd, dp, root = node
    os.symlink("/proc/self/ns/net", root / "vnt-nowhere" / "vnt-hidden")  # visible only to the host
    attach(sd, dp, "a", "10.240.0.36/16", "/vnt-nowhere/vnt-hidden", veth=False)
    done = reconcile(sd, dp, clock=lambda: NOW, host=host(root), this_boot=BOOT)
    assert done.pruned == [] and done.unverified == [] and done.kept == 1


def test_veth_and_host_netns_gone_is_evidence_and_the_configured_cooldown_applies(node):
    sd, dp, root = node
    attach(sd, dp, "a", "10.240.0.36/16", "/vnt-nowhere/vnt-gone-a", veth=False, cooldown_seconds=600.0)
    attach(sd, dp, "b", "10.240.0.37/16", "/vnt-nowhere/vnt-gone-b", veth=False, cooldown_seconds=0.0)
    (root / "vnt-nowhere" / "vnt-gone-b").write_text("")  # an unmounted bind-mount target
    done = reconcile(sd, dp, clock=lambda: NOW, host=host(root), this_boot=BOOT)
    assert sorted(p.record.container_id for p in done.pruned) == ["a", "b"]
    assert "does not exist on the host" in next(p.why for p in done.pruned if p.record.container_id == "a")
    state = IpamStore(sd).read()
    assert state.allocations == {} and EndpointStore(sd).all() == {}
    assert state.cooling["10.240.0.36"].reusable_after == NOW + 600  # the record's, not the default 30
    assert "10.240.0.37" not in state.cooling  # reuseCooldownSeconds 0: reusable at once


def test_a_reboot_since_the_add_is_evidence_wherever_we_run(node):
    sd, dp, root = node
    attach(sd, dp, "a", "10.240.0.36/16", "/vnt-nowhere/vnt-x", veth=False)
    done = reconcile(sd, dp, clock=lambda: NOW, host=host(root, in_host_pid_ns=False), this_boot="another-boot")
    assert [p.record.container_id for p in done.pruned] == ["a"] and "rebooted" in done.pruned[0].why
    assert IpamStore(sd).read().allocations == {}


def test_dry_run_changes_nothing(node):
    sd, dp, root = node
    attach(sd, dp, "a", "10.240.0.36/16", "/vnt-nowhere/vnt-gone", veth=False)
    done = reconcile(sd, dp, clock=lambda: NOW, dry_run=True, host=host(root), this_boot=BOOT)
    assert len(done.pruned) == 1 and len(EndpointStore(sd).all()) == 1


def test_a_record_replaced_meanwhile_is_not_pruned(node):
    sd, dp, root = node
    old = attach(sd, dp, "a", "10.240.0.36/16", "/vnt-nowhere/vnt-gone", veth=False)
    EndpointStore(sd).put(record("a", "10.240.0.36/16", "/vnt-nowhere/vnt-new"))  # an ADD again
    assert not EndpointStore(sd).remove_if_same(old)
    assert EndpointStore(sd).get("vntnet/a/eth0").netns == "/vnt-nowhere/vnt-new"


# --- typed records ---------------------------------------------------------------------------
def test_record_round_trip_keeps_the_documented_format():
    rec = record("c", "10.240.0.36/16", "/run/netns/p", mac="02:00:00:00:00:02", mtu=1500,
                 routes=[{"dst": "0.0.0.0/0", "gw": "10.240.0.1"}], dns={"nameservers": ["1.1.1.1"]},
                 ipam_state_dir="/var/run/vnet", cooldown_seconds=30.0)
    d = rec.to_dict()
    assert d["containerId"] == "c" and d["hostIfName"] == rec.host_ifname and d["ipamStateDir"] == "/var/run/vnet"
    assert d["reuseCooldownSeconds"] == 30.0 and d["bootId"] == BOOT and "bridgeMac" not in d
    assert EndpointRecord.from_dict(json.loads(json.dumps(d))) == rec


@pytest.mark.parametrize("broken,field", [
    ({"hostIfName": None}, "hostIfName"), ({"ips": "10.0.0.1/8"}, "ips"), ({"ips": ["10.0.0.1"]}, "ips"),
    ({"mtu": "1500"}, "mtu"), ({"routes": [{"gw": "1.2.3.4"}]}, "routes"), ({"network": 7}, "network"),
])
def test_a_malformed_record_is_a_clear_cni_error_not_a_keyerror(tmp_path, broken, field):
    sd = str(tmp_path)
    good = record("c1", "10.240.0.36/16", "/run/netns/p1").to_dict()
    bad = {k: v for k, v in {**good, **broken}.items() if v is not None}
    with open(os.path.join(sd, "endpoints.json"), "w") as f:
        json.dump({"kind": "vnet-endpoints", "schemaVersion": 1, "endpoints": {"vntnet/c1/eth0": bad}}, f)
    dp = FakeDataplane()
    dp.netns.add("/run/netns/p1")
    plugin = VnetPlugin(dataplane_factory=lambda _s: dp, ipam=_NoIpam())
    conf = {"cniVersion": "1.0.0", "name": "vntnet", "type": "vnet", "stateDir": sd, "ipam": {"type": "vnet-ipam"}}
    env = {"CNI_COMMAND": "CHECK", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/p1", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/usr/lib/cni"}
    out, code = dispatch.run(plugin, env, json.dumps(conf).encode())
    err = json.loads(out)
    assert code == 1 and err["code"] == 101 and field in err["msg"] and "vntnet/c1/eth0" in err["msg"]
    assert os.path.exists(os.path.join(sd, "endpoints.json"))  # CHECK reads: nothing moved


class _NoIpam:
    def check(self, inv, conf):
        pass


def test_only_a_mount_shared_with_the_host_counts_as_the_runtimes_netns_directory(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "43 27 254:0 /run/netns /run/netns rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "165 71 254:0 /run/netns /var/lib/x rw,relatime master:1 - ext4 /dev/vda rw\n"
        "170 43 0:55 / /run/netns rw,relatime - tmpfs vntblind rw\n")  # a private tmpfs on top
    assert propagated_mount("/var/lib/x", str(info))  # a HostToContainer (slave) mount
    assert not propagated_mount("/run/netns", str(info))  # covered by the private tmpfs
    assert not propagated_mount("/elsewhere", str(info))


def test_an_attachment_with_a_call_in_flight_is_not_pruned(node):
    from vnetcni.node.layout import NodeLayout
    from vnetcni.state import attachments

    sd, dp, root = node
    attach(sd, dp, "a", "10.240.0.36/16", "/vnt-nowhere/vnt-gone", veth=False)
    import threading

    holding, release = threading.Event(), threading.Event()

    def call_in_flight():  # its ADD or DEL runs (on another thread: the lock is re-entrant per thread)
        with attachments.exclusive([NodeLayout(sd).lock_dir], "vntnet", "a", "eth0"):
            holding.set()
            release.wait(30)

    t = threading.Thread(target=call_in_flight)
    t.start()
    try:
        assert holding.wait(30)
        done = reconcile(sd, dp, clock=lambda: NOW, host=host(root), this_boot=BOOT)
    finally:
        release.set()
        t.join(30)
    assert done.pruned == [] and done.kept == 1 and len(EndpointStore(sd).all()) == 1
    done = reconcile(sd, dp, clock=lambda: NOW, host=host(root), this_boot=BOOT)  # once it is done
    assert len(done.pruned) == 1 and EndpointStore(sd).all() == {}
