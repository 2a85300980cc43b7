"""A plugin process without vnetd recognises a bridge an earlier call finished setting up with a
few light netlink requests (no node-wide lock), and anything short of finished (down,
br_netfilter's flag off, multicast snooping on, gateway address gone) sends it through the full set-up again; a bridge
without an uplink is set up without pyroute2 as well."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from support.cni import ns_exec

CODE = textwrap.dedent("""
    import sys
    from vnetcni.dataplane.linux import LinuxDataplane

    dp = LinuxDataplane(lock_dir=sys.argv[1])
    set_up = []
    full = dp._ensure_bridge_locked
    dp._ensure_bridge_locked = lambda *args: set_up.append(args) or full(*args)
    info = dp.ensure_bridge("vntbr0", 1500, "", "10.9.0.1/24")
    print(info.name, info.mac, info.index, bool(set_up), "pyroute2" in sys.modules)
""")


def ensure(node: str, lock_dir: str) -> list[str]:
    out = ns_exec(node, sys.executable, "-c", CODE, lock_dir, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_a_finished_bridge_is_taken_as_is_and_an_unfinished_one_is_set_up_again(namespaces, tmp_path):
    node = namespaces.make("node")
    first = ensure(node, str(tmp_path))
    assert first[3:] == ["True", "False"]  # created (a bridge without an uplink needs no pyroute2)
    again = ensure(node, str(tmp_path))
    assert again == first[:3] + ["False", "False"]  # same bridge, recognised, not set up again

    for breakage in (["ip", "-n", node, "link", "set", "vntbr0", "down"],
                     ["ip", "-n", node, "link", "set", "vntbr0", "type", "bridge", "nf_call_iptables", "0"],
                     ["ip", "-n", node, "link", "set", "vntbr0", "type", "bridge", "mcast_snooping", "1"],
                     ["ip", "-n", node, "addr", "del", "10.9.0.1/24", "dev", "vntbr0"]):
        subprocess.run(breakage, check=True)
        repaired = ensure(node, str(tmp_path))
        assert repaired == first[:3] + ["True", "False"], breakage  # set up again, same bridge
        assert ensure(node, str(tmp_path))[3] == "False"  # and complete once more
    show = subprocess.run(["ip", "-n", node, "-d", "addr", "show", "dev", "vntbr0"], capture_output=True,
                          text=True, check=True).stdout
    assert ",UP>" in show and "10.9.0.1/24" in show and "nf_call_iptables 1" in show and "mcast_snooping 0" in show
