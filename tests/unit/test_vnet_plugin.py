"""The vnet handlers against the fake dataplane and a fake IPAM: ordering, rollback, idempotence."""

from __future__ import annotations

import json

import pytest

from vnetcni.cni import dispatch
from vnetcni.cni.errors import CNIError
from vnetcni.cni.result import IPConfig, Result, Route
from vnetcni.dataplane.fake import FakeDataplane
from vnetcni.plugins.endpoints import EndpointStore, host_ifname
from vnetcni.plugins.vnet import VnetPlugin


class FakeIpam:
    """Hands out 10.240.0.36.. keyed like vnet-ipam; records every call."""

    def __init__(self, fail: bool = False) -> None:
        self.allocated: dict[tuple, str] = {}
        self.calls: list[str] = []
        self.fail = fail

    def add(self, inv, conf):
        self.calls.append("ADD")
        if self.fail:
            raise CNIError(100, "no address available on this node: 30 of 30 in use")
        key = (conf.name, inv.container_id, inv.ifname)
        self.created = key not in self.allocated
        if self.created:
            self.allocated[key] = f"10.240.0.{36 + len(self.allocated)}/16"
        return Result(ips=[IPConfig(self.allocated[key], "10.240.0.1")], routes=[Route("0.0.0.0/0", "10.240.0.1")])

    def add_reporting(self, inv, conf, commit=True):
        """As vnet-ipam: the result, and whether this call created the allocation."""
        self.created = True  # a test's replacement add() creates
        result = self.add(inv, conf)
        return result, self.created

    def delete(self, inv, conf):
        self.calls.append("DEL")
        self.allocated.pop((conf.name, inv.container_id, inv.ifname), None)

    def check(self, inv, conf):
        self.calls.append("CHECK")

    def status(self, inv, conf):
        self.calls.append("STATUS")

    def gc(self, inv, conf, valid):
        """As vnet-ipam: release this network's allocations the runtime no longer lists."""
        self.calls.append("GC")
        keep = {(v["containerID"], v["ifname"]) for v in valid}
        for key in [k for k in self.allocated if k[0] == conf.name and (k[1], k[2]) not in keep]:
            del self.allocated[key]


@pytest.fixture
def world(tmp_path):
    dp = FakeDataplane()
    ipam = FakeIpam()
    plugin = VnetPlugin(dataplane_factory=lambda _state: dp, ipam=ipam)
    return dp, ipam, plugin, str(tmp_path)


def call(plugin, verb, state_dir, cid="c1", netns="/run/netns/p1", version="1.0.0", extra=None, ifname="eth0"):
    conf = {"cniVersion": version, "name": "vnet", "type": "vnet", "stateDir": state_dir, "bridge": "azure0",
            "ipam": {"type": "vnet-ipam"}, **(extra or {})}
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": ifname, "CNI_PATH": "/usr/lib/cni",
           "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web-1;K8S_POD_NAMESPACE=shop"}
    out, code = dispatch.run(plugin, env, json.dumps(conf).encode())
    return code, (json.loads(out) if out else None)


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_add_result_shape_per_version(world, version):
    dp, ipam, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    code, res = call(plugin, "ADD", sd, version=version, extra={"dns": {"nameservers": ["168.63.129.16"]}})
    assert code == 0, res
    assert res["cniVersion"] == version
    names = [i["name"] for i in res["interfaces"]]
    assert names == ["azure0", host_ifname("vnet", "c1", "eth0"), "eth0"]
    assert res["interfaces"][2]["sandbox"] == "/run/netns/p1"
    assert res["ips"][0]["address"] == "10.240.0.36/16" and res["ips"][0]["interface"] == 2
    assert ("version" in res["ips"][0]) == (version < "1.0.0")
    assert res["dns"] == {"nameservers": ["168.63.129.16"]}
    rec = EndpointStore(sd).get("vnet/c1/eth0")
    assert rec.pod_name == "web-1" and rec.pod_namespace == "shop" and rec.ips == ["10.240.0.36/16"]


def test_host_name_is_deterministic_and_fits_the_kernel():
    name = host_ifname("vnet", "abc", "eth0")
    assert name == host_ifname("vnet", "abc", "eth0") and name.startswith("azv") and len(name) == 14
    assert name != host_ifname("vnet", "abd", "eth0") and name != host_ifname("other", "abc", "eth0")


def test_repeated_add_is_idempotent(world):
    dp, ipam, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    _, first = call(plugin, "ADD", sd)
    _, again = call(plugin, "ADD", sd)
    assert first == again and len(dp.hosts) == 1 and len(ipam.allocated) == 1


@pytest.mark.parametrize("failure", ["create", "configure"])
def test_failed_add_releases_the_address_and_leaves_nothing(world, failure):
    dp, ipam, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    dp.fail_on = failure
    code, err = call(plugin, "ADD", sd)
    assert code == 1 and err["code"] == 102
    assert ipam.calls == ["ADD", "DEL"] and ipam.allocated == {}
    assert dp.hosts == {} and EndpointStore(sd).all() == {}


def test_ipam_exhaustion_is_reported_and_nothing_is_created(world):
    dp, _, _, sd = world
    plugin = VnetPlugin(dataplane_factory=lambda _s: dp, ipam=FakeIpam(fail=True))
    dp.netns.add("/run/netns/p1")
    code, err = call(plugin, "ADD", sd)
    assert code == 1 and err["code"] == 100 and "30 of 30" in err["msg"]
    assert dp.hosts == {} and dp.bridges == {}


def test_full_pool_retries_after_a_background_round_freed_the_address(world):
    """The reaper's round running in the background released the held-back address while this
    ADD waited for it: reap() reports none of its own, and the ADD must still try once more."""
    dp, _, _, sd = world
    ipam = FakeIpam(fail=True)

    class BackgroundRound:
        def reap(self, state_dir):
            ipam.fail = False  # the other round's release: the pool has room again
            return 0  # ...but this call finished no teardown itself

    plugin = VnetPlugin(dataplane_factory=lambda _s: dp, ipam=ipam, teardown=BackgroundRound())
    dp.netns.add("/run/netns/p1")
    code, res = call(plugin, "ADD", sd)
    assert code == 0, res
    assert ipam.calls == ["ADD", "ADD"] and res["ips"][0]["address"] == "10.240.0.36/16"


def test_del_twice_and_without_netns(world):
    dp, ipam, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    call(plugin, "ADD", sd)
    dp.remove_netns("/run/netns/p1")  # the sandbox is gone before DEL arrives
    assert call(plugin, "DEL", sd, netns="")[0] == 0
    assert call(plugin, "DEL", sd, netns="")[0] == 0
    assert ipam.allocated == {} and EndpointStore(sd).all() == {}


def test_del_without_record_removes_the_deterministic_veth(world):
    dp, ipam, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    call(plugin, "ADD", sd)
    EndpointStore(sd).remove("vnet/c1/eth0")  # a lost record
    assert call(plugin, "DEL", sd)[0] == 0
    assert dp.hosts == {} and ipam.allocated == {}


def test_check_reports_what_is_wrong(world):
    dp, _, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    call(plugin, "ADD", sd)
    assert call(plugin, "CHECK", sd)[0] == 0
    dp.pods[("/run/netns/p1", "eth0")].addresses.clear()
    code, err = call(plugin, "CHECK", sd)
    assert code == 1 and err["code"] == 103 and "lacks address" in err["msg"]
    assert call(plugin, "CHECK", sd, cid="nope")[1]["code"] == 3


def test_check_needs_040(world):
    dp, _, plugin, sd = world
    assert call(plugin, "CHECK", sd, version="0.3.1")[1]["code"] == 1


def test_gc_removes_attachments_not_listed(world):
    dp, ipam, plugin, sd = world
    for cid in ("c1", "c2"):
        dp.netns.add(f"/run/netns/{cid}")
        call(plugin, "ADD", sd, cid=cid, netns=f"/run/netns/{cid}")
    code, _ = call(plugin, "GC", sd, version="1.1.0",
                   extra={"cni.dev/valid-attachments": [{"containerID": "c2", "ifname": "eth0"}]})
    assert code == 0
    assert list(EndpointStore(sd).all()) == ["vnet/c2/eth0"]
    assert list(ipam.allocated) == [("vnet", "c2", "eth0")]
    assert len(dp.hosts) == 1
    assert ipam.calls.count("DEL") == 0  # vnet-ipam's GC released c1: no second release


@pytest.mark.parametrize("extra,needle", [
    ({"mtu": 10}, "mtu"), ({"mtu": "1500"}, "mtu"), ({"bridge": "x" * 16}, "bridge"),
    ({"ipam": {}}, "ipam"), ({"uplink": 3}, "uplink"),
])
def test_bad_config_is_code_7(world, extra, needle):
    dp, _, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    code, err = call(plugin, "ADD", sd, extra=extra)
    assert code == 1 and err["code"] == 7 and needle in err["msg"]


def test_leftover_veth_without_record_is_replaced(world):
    """An ADD cut off before its record was written (a killed vnetd) left the veth behind."""
    dp, ipam, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    call(plugin, "ADD", sd)
    EndpointStore(sd).remove("vnet/c1/eth0")
    dp.pods.clear()  # the pod side went with its sandbox; the host end's name is still taken
    code, res = call(plugin, "ADD", sd)
    assert code == 0, res
    assert list(dp.hosts) == [host_ifname("vnet", "c1", "eth0")]
    assert EndpointStore(sd).get("vnet/c1/eth0") is not None


def test_interface_name_taken_in_the_pod_is_an_error_and_rolls_back(world):
    dp, ipam, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    from vnetcni.dataplane.model import PodView

    dp.pods[("/run/netns/p1", "eth0")] = PodView(exists=True)
    code, err = call(plugin, "ADD", sd)
    assert code == 1 and err["code"] == 102 and "already exists" in err["msg"]
    assert ipam.allocated == {} and dp.hosts == {}


# --- transparent mode ------------------------------------------------------------------------
TRANSPARENT = {"mode": "transparent"}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_transparent_add_routes_the_pod_through_a_link_local_gateway(world, version):
    dp, ipam, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    code, res = call(plugin, "ADD", sd, version=version, extra=TRANSPARENT)
    assert code == 0, res
    veth = host_ifname("vnet", "c1", "eth0")
    assert [i["name"] for i in res["interfaces"]] == [veth, "eth0"]  # no bridge
    assert res["ips"][0]["address"] == "10.240.0.36/32" and res["ips"][0]["gateway"] == "169.254.1.1"
    assert res["ips"][0]["interface"] == 1
    assert ("version" in res["ips"][0]) == (version < "1.0.0")
    assert {"dst": "0.0.0.0/0", "gw": "169.254.1.1"} in res["routes"]
    assert not dp.bridges
    pod = dp.pods[("/run/netns/p1", "eth0")]
    assert pod.addresses == ["10.240.0.36/32"]
    assert ("169.254.1.1/32", "") in pod.routes and ("0.0.0.0/0", "169.254.1.1") in pod.routes
    assert pod.neighbours == {"169.254.1.1": dp.hosts[veth]["mac"]}
    assert dp.hosts[veth]["bridge"] == "" and dp.hosts[veth]["routes"] == ["10.240.0.36/32"]
    rec = EndpointStore(sd).get("vnet/c1/eth0")
    assert rec.mode == "transparent" and rec.bridge == "" and rec.gateways == ["169.254.1.1"]
    assert call(plugin, "ADD", sd, version=version, extra=TRANSPARENT)[1] == res  # idempotent


def test_transparent_without_default_route_still_reaches_the_subnet(world):
    dp, ipam, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    ipam.add = lambda inv, conf: Result(ips=[IPConfig("10.240.0.40/16", "10.240.0.1")])
    code, res = call(plugin, "ADD", sd, extra=TRANSPARENT)
    assert code == 0, res
    assert res["routes"] == [{"dst": "169.254.1.1/32"}, {"dst": "10.240.0.0/16", "gw": "169.254.1.1"}]


@pytest.mark.parametrize("damage,needle", [
    (lambda dp, veth: dp.pods[("/run/netns/p1", "eth0")].neighbours.clear(), "not pinned"),
    (lambda dp, veth: dp.hosts[veth]["routes"].clear(), "no route to 10.240.0.36"),
    (lambda dp, veth: dp.hosts[veth].update(bridge="azure0"), "is on bridge azure0"),
    (lambda dp, veth: dp.pods[("/run/netns/p1", "eth0")].routes.pop(), "missing in the pod"),
])
def test_transparent_check_sees_what_is_wrong(world, damage, needle):
    dp, _, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    call(plugin, "ADD", sd, extra=TRANSPARENT)
    assert call(plugin, "CHECK", sd, extra=TRANSPARENT)[0] == 0
    damage(dp, host_ifname("vnet", "c1", "eth0"))
    code, err = call(plugin, "CHECK", sd, extra=TRANSPARENT)
    assert code == 1 and err["code"] == 103 and needle in err["msg"], err


def test_transparent_del_without_netns_and_gc(world):
    dp, ipam, plugin, sd = world
    for cid in ("c1", "c2", "c3"):
        dp.netns.add(f"/run/netns/{cid}")
        assert call(plugin, "ADD", sd, cid=cid, netns=f"/run/netns/{cid}", extra=TRANSPARENT)[0] == 0
    assert call(plugin, "DEL", sd, cid="c1", netns="", extra=TRANSPARENT)[0] == 0
    code, _ = call(plugin, "GC", sd, version="1.1.0", extra={
        **TRANSPARENT, "cni.dev/valid-attachments": [{"containerID": "c2", "ifname": "eth0"}]})
    assert code == 0
    assert list(EndpointStore(sd).all()) == ["vnet/c2/eth0"]
    assert list(dp.hosts) == [host_ifname("vnet", "c2", "eth0")]
    assert list(ipam.allocated) == [("vnet", "c2", "eth0")]


def test_unknown_mode_is_code_7(world):
    dp, _, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    code, err = call(plugin, "ADD", sd, extra={"mode": "l2tunnel"})
    assert code == 1 and err["code"] == 7 and "mode" in err["msg"]
def test_status_fails_with_code_50_and_the_fix_until_the_node_is_prepared(world):
    dp, ipam, plugin, sd = world
    assert call(plugin, "STATUS", sd, version="1.1.0") == (0, None)
    dp.facts["ip_forward"] = 0
    code, err = call(plugin, "STATUS", sd, version="1.1.0")
    assert code == 1 and err["code"] == 50
    assert "ip_forward" in err["msg"] and "sysctl -w net.ipv4.ip_forward=1" in err["msg"]
    dp.facts["ip_forward"] = 1
    assert call(plugin, "STATUS", sd, version="1.1.0") == (0, None)


def test_check_reports_a_pod_port_without_hairpin(world):
    dp, _, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    assert call(plugin, "ADD", sd)[0] == 0
    assert call(plugin, "CHECK", sd)[0] == 0
    next(iter(dp.hosts.values()))["hairpin"] = False
    code, err = call(plugin, "CHECK", sd)
    assert code == 1 and err["code"] == 103 and "hairpin mode off" in err["msg"]


# --- dual-stack --------------------------------------------------------------------------------
def _dual(ipam):
    ipam.add = lambda inv, conf: Result(
        ips=[IPConfig("10.240.0.36/16", "10.240.0.1"), IPConfig("fd00:10:240::24/64", "fd00:10:240::1")],
        routes=[Route("0.0.0.0/0", "10.240.0.1"), Route("::/0", "fd00:10:240::1")])


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_dual_stack_bridge_mode(world, version):
    dp, ipam, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    _dual(ipam)
    code, res = call(plugin, "ADD", sd, version=version)
    assert code == 0, res
    assert [(ip["address"], ip["gateway"], ip["interface"]) for ip in res["ips"]] == [
        ("10.240.0.36/16", "10.240.0.1", 2), ("fd00:10:240::24/64", "fd00:10:240::1", 2)]
    assert [ip.get("version") for ip in res["ips"]] == (["4", "6"] if version < "1.0.0" else [None, None])
    assert {"dst": "::/0", "gw": "fd00:10:240::1"} in res["routes"]
    assert dp.pods[("/run/netns/p1", "eth0")].addresses == ["10.240.0.36/16", "fd00:10:240::24/64"]
    if version >= "0.4.0":
        assert call(plugin, "CHECK", sd, version=version, extra={"prevResult": res})[0] == 0
        dp.pods[("/run/netns/p1", "eth0")].addresses.pop()
        code, err = call(plugin, "CHECK", sd, version=version, extra={"prevResult": res})
        assert code == 1 and "fd00:10:240::24/64" in err["msg"]


@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
def test_dual_stack_transparent_mode(world, version):
    dp, ipam, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    _dual(ipam)
    code, res = call(plugin, "ADD", sd, version=version, extra=TRANSPARENT)
    assert code == 0, res
    assert [(ip["address"], ip["gateway"]) for ip in res["ips"]] == [
        ("10.240.0.36/32", "169.254.1.1"), ("fd00:10:240::24/128", "fe80::1")]
    assert {"dst": "::/0", "gw": "fe80::1"} in res["routes"] and {"dst": "0.0.0.0/0", "gw": "169.254.1.1"} in res["routes"]
    veth = host_ifname("vnet", "c1", "eth0")
    assert dp.hosts[veth]["routes"] == ["10.240.0.36/32", "fd00:10:240::24/128"]
    host_mac = dp.hosts[veth]["mac"]
    assert dp.pods[("/run/netns/p1", "eth0")].neighbours == {"169.254.1.1": host_mac, "fe80::1": host_mac}
    if version >= "0.4.0":
        assert call(plugin, "CHECK", sd, version=version, extra={**TRANSPARENT, "prevResult": res})[0] == 0
        del dp.pods[("/run/netns/p1", "eth0")].neighbours["fe80::1"]
        dp.hosts[veth]["neighbours"].clear()
        code, err = call(plugin, "CHECK", sd, version=version, extra={**TRANSPARENT, "prevResult": res})
        assert code == 1 and "fe80::1 is not pinned" in err["msg"]
        assert "does not pin fd00:10:240::24 to the pod's MAC" in err["msg"]
    assert call(plugin, "DEL", sd, version=version, netns="", extra=TRANSPARENT)[0] == 0
    assert not dp.hosts


def test_vnetctl_install_writes_a_transparent_conflist(tmp_path):
    from typer.testing import CliRunner

    from vnetcni.cli.main import app

    args = ["install", "--cni-bin-dir", str(tmp_path / "bin"), "--cni-conf-dir", str(tmp_path / "net.d"),
            "--create-dirs", "--no-compile", "--prefix", str(tmp_path / "opt"), "--uplink", "eth0"]
    res = CliRunner().invoke(app, [*args, "--mode", "transparent"])
    assert res.exit_code == 0, res.output
    main = json.loads((tmp_path / "net.d" / "10-vnet.conflist").read_text())["plugins"][0]
    assert main["mode"] == "transparent" and "bridge" not in main and main["uplink"] == "eth0"
    assert CliRunner().invoke(app, [*args, "--mode", "overlay"]).exit_code == 2


def test_del_without_vnetd_releases_the_address_only_once_the_veth_is_gone(world):
    """The veth's removal runs beside the DEL's own work, but the address is never released (and
    so never handed out again) while the old pod end still exists."""
    dp, ipam, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    call(plugin, "ADD", sd)
    host = host_ifname("vnet", "c1", "eth0")
    seen_at_release = []
    plain_delete = ipam.delete

    def delete(inv, conf):
        seen_at_release.append(host in dp.hosts)
        plain_delete(inv, conf)

    def begin_delete(name):  # the kernel's teardown finishes only when waited for
        return lambda: dp.delete_pod_link(name)

    ipam.delete = delete
    dp.begin_delete_pod_link = begin_delete
    assert call(plugin, "DEL", sd)[0] == 0
    assert seen_at_release == [False]
    assert ipam.allocated == {} and EndpointStore(sd).all() == {} and dp.hosts == {}


def test_del_without_vnetd_keeps_address_and_record_when_the_veth_cannot_be_deleted(world):
    dp, ipam, plugin, sd = world
    dp.netns.add("/run/netns/p1")
    call(plugin, "ADD", sd)

    def begin_delete(name):
        def wait():
            raise CNIError(102, f"cannot delete {name}: device busy")
        return wait

    dp.begin_delete_pod_link = begin_delete
    code, err = call(plugin, "DEL", sd)
    assert code == 1 and err["code"] == 102
    assert len(ipam.allocated) == 1 and "vnet/c1/eth0" in EndpointStore(sd).all()
