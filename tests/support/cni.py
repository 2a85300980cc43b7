"""Running CNI plugins as a runtime does, inside a throwaway node namespace."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass

REFERENCE_DIR = "/usr/lib/cni"


@dataclass
class Outcome:
    code: int
    out: dict | None
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0


def run_plugin(binary: str, command: str, conf: dict, *, node: str | None = None, container_id: str = "",
               netns: str = "", ifname: str = "eth0", cni_path: str = REFERENCE_DIR, args: str = "IgnoreUnknown=1",
               timeout: float = 60) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
                "CNI_IFNAME": ifname, "CNI_PATH": cni_path, "CNI_ARGS": args})
    cmd = ["ip", "netns", "exec", node, binary] if node else [binary]
    proc = subprocess.run(cmd, input=json.dumps(conf).encode(), env=env, capture_output=True, timeout=timeout)
    text = proc.stdout.decode().strip()
    return Outcome(proc.returncode, json.loads(text) if text else None, proc.stderr.decode())


def metadata_xml(mac: str, primary: str, secondaries: list[str], prefix: str = "10.240.0.0/16") -> str:
    rows = [f'      <IPAddress Address="{primary}" IsPrimary="true"/>']
    rows += [f'      <IPAddress Address="{a}" IsPrimary="false"/>' for a in secondaries]
    return ("<Interfaces>\n"
            f'  <Interface MacAddress="{mac}" IsPrimary="true">\n'
            f'    <IPSubnet Prefix="{prefix}">\n' + "\n".join(rows) + "\n    </IPSubnet>\n  </Interface>\n</Interfaces>\n")


def ns_exec(ns: str, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout)


def links(ns: str) -> list[str]:
    out = subprocess.run(["ip", "-n", ns, "-o", "link", "show"], capture_output=True, text=True).stdout
    return [line.split(": ")[1].split("@")[0] for line in out.splitlines()]


def wait_for(pred, timeout: float = 15.0, what: str = "condition") -> None:
    """Poll pred() until it is true; AssertionError naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def node_nic(ns: str, *addresses: str, forward: tuple[str, ...] = ("net.ipv4.ip_forward=1",)) -> None:
    """A routed node's NIC inside its namespace: eth0 with the node's primary address(es) (IPv6
    without DAD), a veth pair standing in for the VM's NIC (not every machine has the dummy
    module), and the forwarding sysctls every Kubernetes node has, set inside the namespace."""
    cmds = [["link", "add", "eth0", "type", "veth", "peer", "name", "vnic"]]
    cmds += [["addr", "add", a, "dev", "eth0", *(["nodad"] if ":" in a else [])] for a in addresses]
    cmds += [["link", "set", "eth0", "up"], ["link", "set", "vnic", "up"]]
    for cmd in cmds:
        subprocess.run(["ip", "-n", ns, *cmd], check=True)
    if forward:
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", *forward], check=True, capture_output=True)
