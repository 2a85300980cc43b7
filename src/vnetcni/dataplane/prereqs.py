"""What kube-proxy's iptables mode needs from a node whose pods sit on a bridge, and the fix for each.

- `br_netfilter` loaded: without it iptables never sees frames the bridge forwards, so a pod's
  call to a ClusterIP is bridged untranslated towards the VNet's gateway.
- bridged IPv4 handed to iptables: the node-wide `net.bridge.bridge-nf-call-iptables=1`, or the
  bridge's own `nf_call_iptables` option. vnet sets the latter on its bridge when it sets it up
  (the bridge is vnet's object; no other bridge on the node changes), so this is only reported
  when someone turned both off.
- `net.ipv4.ip_forward=1`: DNAT towards another node, NodePorts and the masquerade for hairpin
  are routed by the node.

vnet loads no module and writes no node-wide sysctl: both are the node's provisioning (the
Kubernetes "container runtime prerequisites", kubeadm's preflight checks them), written to
/etc/modules-load.d and /etc/sysctl.d so a reboot keeps them; a value poked at run time by an
agent silently diverges from the node's configuration and affects everything else on it (other
bridges, the firewall). vnet reports what is missing instead: STATUS (vnetd's readiness) fails
with code 50 and the commands to run, and `vnetctl status` lists every check.

Pure: the facts are read by the dataplane (in the node's network namespace), judged here.
"""

from __future__ import annotations

from dataclasses import dataclass

BR_NETFILTER_FIX = ("modprobe br_netfilter && echo br_netfilter > /etc/modules-load.d/k8s.conf")
FORWARD_FIX = ("sysctl -w net.ipv4.ip_forward=1 && echo net.ipv4.ip_forward=1 >> /etc/sysctl.d/k8s.conf")
NF_CALL_FIX = ("sysctl -w net.bridge.bridge-nf-call-iptables=1 && "
               "echo net.bridge.bridge-nf-call-iptables=1 >> /etc/sysctl.d/k8s.conf")


@dataclass(frozen=True)
class NodeFacts:
    br_netfilter: bool  # /proc/sys/net/bridge exists (module loaded or built in)
    bridge_nf_call_iptables: int | None  # the node-wide sysctl; None without br_netfilter
    ip_forward: int
    bridge: str
    bridge_exists: bool
    bridge_nf_flag: bool  # the bridge's own nf_call_iptables option


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    found: str
    fix: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "found": self.found, "fix": self.fix}


def evaluate(facts: NodeFacts, bridged: bool = True) -> list[Finding]:
    """Every check for this mode: transparent mode has no bridge, so it needs forwarding only."""
    if not bridged:
        return [_forwarding(facts)]
    out = []
    if facts.br_netfilter:
        out.append(Finding("br_netfilter", True, "loaded"))
    else:
        out.append(Finding("br_netfilter", False, "not loaded (no /proc/sys/net/bridge)", BR_NETFILTER_FIX))
    sysctl = facts.bridge_nf_call_iptables
    if not facts.br_netfilter:
        out.append(Finding("bridge-nf-call-iptables", False, "unavailable without br_netfilter", BR_NETFILTER_FIX))
    elif sysctl == 1:
        out.append(Finding("bridge-nf-call-iptables", True, "net.bridge.bridge-nf-call-iptables=1"))
    elif facts.bridge_nf_flag:
        out.append(Finding("bridge-nf-call-iptables", True, f"bridge {facts.bridge} has nf_call_iptables on "
                                                            f"(the sysctl is {sysctl})"))
    elif not facts.bridge_exists:
        out.append(Finding("bridge-nf-call-iptables", True, f"vnet turns nf_call_iptables on when it creates "
                                                            f"bridge {facts.bridge} (the sysctl is {sysctl})"))
    else:
        out.append(Finding("bridge-nf-call-iptables", False, f"net.bridge.bridge-nf-call-iptables={sysctl} and "
                                                             f"bridge {facts.bridge} has nf_call_iptables off",
                           NF_CALL_FIX))
    out.append(_forwarding(facts))
    return out


def _forwarding(facts: NodeFacts) -> Finding:
    if facts.ip_forward == 1:
        return Finding("ip_forward", True, "net.ipv4.ip_forward=1")
    return Finding("ip_forward", False, f"net.ipv4.ip_forward={facts.ip_forward}", FORWARD_FIX)


def problems(findings: list[Finding]) -> str:
    """One line for a STATUS error: what is missing and the commands that fix it ("" when none)."""
    bad = [f for f in findings if not f.ok]
    if not bad:
        return ""
    fixes = []
    for f in bad:
        if f.fix not in fixes:
            fixes.append(f.fix)
    what = "; ".join(f"{f.name}: {f.found}" for f in bad)
    return (f"this node is not ready for Kubernetes Services over the bridge ({what}); "
            f"fix: {'; '.join(fixes)}")
