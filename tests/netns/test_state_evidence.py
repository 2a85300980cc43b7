"""Pruning only on evidence, one vnetd per state directory before it reconciles, a thread that
cannot leave a pod's namespace, and a crash-safe uplink adoption (real namespaces)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support.cni import links, metadata_xml, ns_exec, run_plugin, wait_for
from vnetcni.daemon.client import listening
from support.statefiles import load_state

BIN = Path(sys.executable).parent
VNETCTL, VNETD = str(BIN / "vnetctl"), str(BIN / "vnetd")


@pytest.fixture
def conf(tmp_path, state_dir):
    md = tmp_path / "interfaces.xml"
    md.write_text(metadata_xml("000D3A51C490", "10.240.0.35", [f"10.240.0.{i}" for i in range(36, 46)]))
    return {"cniVersion": "1.0.0", "name": "vntnet", "type": "vnet", "bridge": "vntbr0", "stateDir": state_dir,
            "ipam": {"type": "vnet-ipam", "metadataFile": str(md), "reuseCooldownSeconds": 0}}


def veths(node) -> list[str]:
    return sorted(l for l in links(node) if l.startswith("azv"))


def records(state_dir) -> list[str]:
    path = os.path.join(state_dir, "endpoints.json")
    return sorted(e["containerId"] for e in load_state(path)["endpoints"].values())


def two_pods_one_gone(cni_bin, node, namespaces, conf):
    """ctr-live (running) and ctr-gone (its netns deleted, its veth gone with it)."""
    vnet = os.path.join(cni_bin, "vnet")
    live, gone = namespaces.make("pod"), namespaces.make("pod")
    for cid, ns in (("ctr-live", live), ("ctr-gone", gone)):
        assert run_plugin(vnet, "ADD", conf, node=node, container_id=cid, netns=f"/run/netns/{ns}",
                          cni_path=cni_bin).ok
    subprocess.run(["ip", "netns", "del", gone], check=True)
    namespaces.created.remove(gone)
    wait_for(lambda: len(veths(node)) == 1, timeout=30, what="the deleted pod's veth to go with its namespace")
    return live


def cleanup(cni_bin, node, conf, cids=("ctr-live", "ctr-gone")):
    for cid in cids:
        assert run_plugin(os.path.join(cni_bin, "vnet"), "DEL", conf, node=node, container_id=cid, netns="",
                          cni_path=cni_bin).ok


def test_gc_from_a_namespace_that_cannot_see_the_pods_prunes_nothing(cni_bin, node_ns, namespaces, conf, state_dir):
    two_pods_one_gone(cni_bin, node_ns, namespaces, conf)
    gc = f"{VNETCTL} gc --state-dir {state_dir}"
    # A container or `kubectl debug node`: its own (empty) /run/netns, perhaps its own PID namespace.
    for isolation in (["--mount"], ["--mount", "--pid", "--fork", "--mount-proc"]):
        blind = ns_exec(node_ns, "unshare", *isolation, "sh", "-c",
                        f"mount -t tmpfs vntblind /run/netns && {gc}", timeout=60)
        assert blind.returncode == 0, blind
        assert "0 stale, 2 kept" in blind.stdout and "not verifiable from here" in blind.stdout, blind
        assert records(state_dir) == ["ctr-gone", "ctr-live"] and len(veths(node_ns)) == 1
    # On the node: the gone pod's veth is gone and so is its netns, in the directory where the
    # live pod's namespace is visible (or through the host's root where it can be read).
    on_node = ns_exec(node_ns, VNETCTL, "gc", "--state-dir", state_dir, timeout=60)
    assert on_node.returncode == 0 and "1 stale, 1 kept" in on_node.stdout, on_node
    assert records(state_dir) == ["ctr-live"] and len(veths(node_ns)) == 1
    allocations = load_state(os.path.join(state_dir, "ipam.json"))["allocations"]
    assert [a["containerId"] for a in allocations.values()] == ["ctr-live"]
    cleanup(cni_bin, node_ns, conf, ["ctr-live"])


def test_a_second_vnetd_exits_before_reconciling(cni_bin, node_ns, namespaces, conf, state_dir, tmp_path):
    started = []

    def vnetd(*extra):
        p = subprocess.Popen(["ip", "netns", "exec", node_ns, VNETD, "--state-dir", state_dir,
                              "--log-file", str(tmp_path / "vnetd.log"), *extra],
                             stderr=subprocess.PIPE, text=True)
        started.append(p)
        return p

    try:
        first = vnetd("--no-reconcile")
        wait_for(lambda: listening(os.path.join(state_dir, "vnetd.sock")) or first.poll() is not None,
                 what="vnetd socket")
        assert first.poll() is None
        two_pods_one_gone(cni_bin, node_ns, namespaces, conf)
        second = vnetd()
        assert second.wait(60) == 1
        err = second.stderr.read()
        assert "another vnetd is running" in err and "pruned" not in err
        assert records(state_dir) == ["ctr-gone", "ctr-live"]  # the second one touched nothing
        first.terminate()
        first.wait(30)
        third = vnetd()  # the one vnetd of this state directory reconciles at start
        wait_for(lambda: listening(os.path.join(state_dir, "vnetd.sock")) or third.poll() is not None,
                 what="vnetd socket")
        assert third.poll() is None and records(state_dir) == ["ctr-live"]
    finally:
        for p in started:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            p.stderr.close()
    cleanup(cni_bin, node_ns, conf)


STRANDED = textwrap.dedent("""
    import errno, os, sys
    from vnetcni.dataplane import netns as nsutil

    real, calls = nsutil.setns, []

    def setns(fd, nstype=nsutil.CLONE_NEWNET):
        calls.append(fd)
        if len(calls) == 2:  # the way back home
            raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
        real(fd, nstype)

    nsutil.setns = setns
    try:
        with nsutil.entered(sys.argv[1]):
            pass
    except OSError:
        pass  # what a worker's error handling would do before serving the next request
    print("still serving, from", os.readlink("/proc/thread-self/ns/net"), flush=True)
""")


def test_a_thread_that_cannot_leave_a_pods_namespace_ends_the_process(pod_ns):
    _, path = pod_ns()
    proc = subprocess.run([sys.executable, "-c", STRANDED, path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 70, proc
    assert "still serving" not in proc.stdout
    assert "could not return from network namespace" in proc.stderr and path in proc.stderr


# --- uplink adoption ---------------------------------------------------------------------------
ADOPT = textwrap.dedent("""
    import json, sys
    from vnetcni.dataplane.linux import LinuxDataplane
    from pyroute2 import IPRoute

    lock_dir, fail_after = sys.argv[1], int(sys.argv[2])

    class Crashing:
        # Lets `fail_after` changes through, then dies as a crashed process would.
        def __init__(self, ipr):
            self.ipr, self.changes = ipr, 0

        def _change(self, method, *args, **kw):
            if args and args[0] in ("get", "dump"):
                return getattr(self.ipr, method)(*args, **kw)
            if self.changes == fail_after:
                import os
                os._exit(9)
            self.changes += 1
            return getattr(self.ipr, method)(*args, **kw)

        def link(self, *a, **k): return self._change("link", *a, **k)
        def addr(self, *a, **k): return self._change("addr", *a, **k)
        def route(self, *a, **k): return self._change("route", *a, **k)
        def __getattr__(self, name): return getattr(self.ipr, name)

    dp = LinuxDataplane(lock_dir=lock_dir)
    if fail_after >= 0:
        dp._local.ipr = Crashing(IPRoute())
    dp.ensure_bridge("vntbr0", 1500, "vntup0")
    print("adopted")
""")


def addresses(node, dev) -> list[str]:
    out = subprocess.run(["ip", "-n", node, "-j", "addr", "show", "dev", dev], capture_output=True, text=True)
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out.stdout or "[]")
            for a in link.get("addr_info", []) if a.get("scope") == "global"]


def default_route(node) -> str:
    out = subprocess.run(["ip", "-n", node, "-j", "route", "show", "default"], capture_output=True, text=True)
    routes = json.loads(out.stdout or "[]")
    return routes[0]["dev"] if routes else ""


# changes: bridge add, bridge up, enslave, address to bridge, route to bridge, address off uplink
@pytest.mark.parametrize("crash_after", range(7))
def test_uplink_adoption_never_leaves_the_node_without_its_address(namespaces, tmp_path, crash_after):
    node, fabric = namespaces.make("node"), namespaces.make("fab")
    subprocess.run(["ip", "-n", node, "link", "add", "vntup0", "type", "veth", "peer", "name", "vntpeer0",
                    "netns", fabric], check=True)
    subprocess.run(["ip", "-n", node, "addr", "add", "10.77.0.5/24", "dev", "vntup0"], check=True)
    subprocess.run(["ip", "-n", node, "link", "set", "vntup0", "up"], check=True)
    subprocess.run(["ip", "-n", node, "route", "add", "default", "via", "10.77.0.1", "dev", "vntup0"], check=True)

    crashed = ns_exec(node, sys.executable, "-c", ADOPT, str(tmp_path), str(crash_after), timeout=60)
    held = addresses(node, "vntup0") + (addresses(node, "vntbr0") if "vntbr0" in links(node) else [])
    assert "10.77.0.5/24" in held, f"after a crash at change {crash_after} the node lost its address: {crashed}"
    if crashed.returncode == 0:
        assert crash_after >= 6  # it made fewer changes than that: it cannot have finished

    done = ns_exec(node, sys.executable, "-c", ADOPT, str(tmp_path), "-1", timeout=60)  # the next ADD
    assert done.returncode == 0 and "adopted" in done.stdout, done
    assert addresses(node, "vntbr0") == ["10.77.0.5/24"] and addresses(node, "vntup0") == []
    master = subprocess.run(["ip", "-n", node, "-j", "link", "show", "vntup0"], capture_output=True, text=True)
    assert json.loads(master.stdout)[0].get("master") == "vntbr0"
    assert default_route(node) == "vntbr0"


def test_uplink_adoption_errors_are_not_suppressed(namespaces, tmp_path):
    node, fabric = namespaces.make("node"), namespaces.make("fab")
    subprocess.run(["ip", "-n", node, "link", "add", "vntup0", "type", "veth", "peer", "name", "vntpeer0",
                    "netns", fabric], check=True)
    subprocess.run(["ip", "-n", node, "addr", "add", "10.77.0.5/24", "dev", "vntup0"], check=True)
    subprocess.run(["ip", "-n", node, "link", "set", "vntup0", "up"], check=True)
    code = textwrap.dedent("""
        import sys
        from pyroute2.netlink.exceptions import NetlinkError
        from vnetcni.cni.errors import CNIError
        from vnetcni.dataplane.linux import LinuxDataplane
        from pyroute2 import IPRoute

        class Refusing:
            def __init__(self, ipr): self.ipr = ipr
            def addr(self, cmd, **kw):
                if cmd == "add":
                    raise NetlinkError(1, "Operation not permitted")
                return self.ipr.addr(cmd, **kw)
            def __getattr__(self, name): return getattr(self.ipr, name)

        dp = LinuxDataplane(lock_dir=sys.argv[1])
        dp._local.ipr = Refusing(IPRoute())
        try:
            dp.ensure_bridge("vntbr0", 1500, "vntup0")
        except CNIError as err:
            print("error", err.code, err.msg)
    """)
    out = ns_exec(node, sys.executable, "-c", code, str(tmp_path), timeout=60)
    assert "error 102" in out.stdout, out
    assert addresses(node, "vntup0") == ["10.77.0.5/24"]  # it kept its address
