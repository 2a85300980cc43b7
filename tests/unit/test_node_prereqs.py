"""The node prerequisites for Services over the bridge, judged from facts (STATUS and CHECK through
the plugin: test_vnet_plugin.py)."""

from __future__ import annotations

import pytest

from vnetcni.dataplane.prereqs import (BR_NETFILTER_FIX, FORWARD_FIX, NF_CALL_FIX, NodeFacts, evaluate,
                                       problems)


def facts(**kw) -> NodeFacts:
    base = dict(br_netfilter=True, bridge_nf_call_iptables=1, ip_forward=1, bridge="azure0",
                bridge_exists=True, bridge_nf_flag=True)
    return NodeFacts(**{**base, **kw})


def by_name(findings):
    return {f.name: f for f in findings}


def test_a_kubernetes_node_passes_every_check():
    found = evaluate(facts())
    assert all(f.ok for f in found) and problems(found) == ""
    assert set(by_name(found)) == {"br_netfilter", "bridge-nf-call-iptables", "ip_forward"}


def test_missing_br_netfilter_and_forwarding_are_reported_with_their_fixes():
    found = by_name(evaluate(facts(br_netfilter=False, bridge_nf_call_iptables=None, ip_forward=0)))
    assert not found["br_netfilter"].ok and found["br_netfilter"].fix == BR_NETFILTER_FIX
    assert not found["bridge-nf-call-iptables"].ok
    assert not found["ip_forward"].ok and found["ip_forward"].fix == FORWARD_FIX
    line = problems(list(found.values()))
    assert "modprobe br_netfilter" in line and "net.ipv4.ip_forward=1" in line
    assert line.count("modprobe br_netfilter") == 1  # one fix named once


@pytest.mark.parametrize("sysctl,exists,flag,ok", [
    (1, True, False, True),    # the node-wide sysctl is enough
    (0, True, True, True),     # the bridge's own option is enough
    (0, False, False, True),   # vnet sets the option when it creates the bridge
    (0, True, False, False),   # both off on an existing bridge
])
def test_bridged_traffic_reaches_iptables_through_the_sysctl_or_the_bridge_option(sysctl, exists, flag, ok):
    found = by_name(evaluate(facts(bridge_nf_call_iptables=sysctl, bridge_exists=exists, bridge_nf_flag=flag)))
    assert found["bridge-nf-call-iptables"].ok is ok
    assert (found["bridge-nf-call-iptables"].fix == NF_CALL_FIX) is not ok


def test_transparent_mode_needs_forwarding_only():
    found = evaluate(facts(br_netfilter=False, bridge_nf_call_iptables=None, ip_forward=1), bridged=False)
    assert [f.name for f in found] == ["ip_forward"] and found[0].ok
    assert not evaluate(facts(ip_forward=0), bridged=False)[0].ok
