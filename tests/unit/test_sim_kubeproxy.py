"""kube-proxy's iptables layout as sim/kubeproxy.py renders it (no root): chain names hashed as
kube-proxy hashes them, rule order, probabilities, affinity, NodePorts, and the restore input."""

from __future__ import annotations

from vnetcni.sim.kubeproxy import Service, ext_chain, restore_input, rules, sep_chain, svc_chain

ADDR = {"default/a": "10.240.0.5", "default/b": "10.240.0.6", "default/c": "10.240.0.36"}


def svc(**kw) -> Service:
    base = dict(namespace="default", name="web", clusterIP="10.96.0.10", port=80, targetPort=8080,
                endpoints=["default/a", "default/b", "default/c"])
    return Service(**{**base, **kw})


def test_chain_names_are_kube_proxys():
    # the values kube-proxy's own proxier tests expect for ns1/svc1:p80 over TCP
    s = Service(namespace="ns1", name="svc1", clusterIP="172.30.0.41", port=80, targetPort=80, portName="p80")
    assert svc_chain(s) == "KUBE-SVC-XPGD46QRK7WJZT7O"
    assert ext_chain(s) == "KUBE-EXT-XPGD46QRK7WJZT7O"
    assert sep_chain(s, "10.180.0.1:80") == "KUBE-SEP-SXIVWICOYRO3J4NJ"


def test_endpoints_are_picked_with_falling_probabilities_and_hairpin_is_masqueraded():
    nat, _, chains = rules([svc()], ADDR, "10.240.0.0/16")
    lines = nat.splitlines()
    picks = [line for line in lines if line.startswith(f"-A {svc_chain(svc())} ") and "KUBE-SEP-" in line]
    assert ["probability 0.3333333333" in picks[0], "probability 0.5000000000" in picks[1],
            "statistic" not in picks[2]] == [True, True, True]
    for ep in ("10.240.0.5", "10.240.0.6", "10.240.0.36"):
        sep = sep_chain(svc(), f"{ep}:8080")
        assert sep in chains
        assert f'-A {sep} -m comment --comment "default/web:http" -s {ep}/32 -j KUBE-MARK-MASQ' in lines
        assert any(line.startswith(f"-A {sep} ") and line.endswith(f"DNAT --to-destination {ep}:8080")
                   for line in lines)
    assert "! -s 10.240.0.0/16" in nat  # traffic from outside the cluster is masqueraded
    assert lines[-1].endswith("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")  # must stay last


def test_client_ip_affinity_checks_recent_before_picking():
    s = svc(sessionAffinity="ClientIP")
    nat, _, _ = rules([s], ADDR, "10.240.0.0/16")
    mine = [line for line in nat.splitlines() if line.startswith(f"-A {svc_chain(s)} ") and "KUBE-SEP-" in line]
    assert all("--rcheck --seconds 10800 --reap" in line for line in mine[:3])
    assert all("--rcheck" not in line for line in mine[3:]) and len(mine) == 6
    assert nat.count("-m recent --set --name KUBE-SEP-") == 3


def test_nodeport_goes_through_the_ext_chain_and_is_masqueraded():
    s = svc(nodePort=30080)
    nat, _, chains = rules([s], ADDR, "10.240.0.0/16")
    assert f'-A KUBE-NODEPORTS -m comment --comment "default/web:http" -m tcp -p tcp --dport 30080 -j {ext_chain(s)}' in nat
    assert f"-A {ext_chain(s)} -j {svc_chain(s)}" in nat and ext_chain(s) in chains
    cluster_ip_only = rules([svc()], ADDR, "10.240.0.0/16")[0]
    assert "-A KUBE-NODEPORTS" not in cluster_ip_only and "KUBE-EXT-" not in cluster_ip_only


def test_a_service_without_live_endpoints_gets_no_chain():
    nat, _, chains = rules([svc(endpoints=["default/gone"])], ADDR, "10.240.0.0/16")
    assert svc_chain(svc()) not in chains and "10.96.0.10" not in nat


def test_restore_input_adds_the_jumps_once_and_deletes_chains_of_removed_services():
    nat, filt, chains = rules([svc()], ADDR, "10.240.0.0/16")
    first = restore_input(nat, filt, chains, "")
    assert first.count("-I PREROUTING 1 ") == 1 and first.count("-I FORWARD 1 ") == 1
    saved = ("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-OLDOLDOLDOLDOLDO - [0:0]\n"
             '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n'
             '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n'
             '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING\nCOMMIT\n'
             '*filter\n:KUBE-FORWARD - [0:0]\n'
             '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD\nCOMMIT\n')
    again = restore_input(nat, filt, chains, saved)
    assert "-I " not in again
    assert ":KUBE-SVC-OLDOLDOLDOLDOLDO - [0:0]" in again and "-X KUBE-SVC-OLDOLDOLDOLDOLDO" in again
    assert again.count("COMMIT") == 2
