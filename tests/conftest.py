"""Test harness: markers by folder, namespace fixtures that always clean up, and a session-end
check that fails the run if anything the tests created is left behind."""

from __future__ import annotations

import os
import shutil
import itertools
import subprocess
from pathlib import Path

import pytest

from support import resources

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_BEFORE: dict = {}


def pytest_configure(config):
    if os.geteuid() == 0:
        resources.sweep()
        from support.containerd import sweep_dead_sessions

        sweep_dead_sessions()  # containerd nodes of sessions that were killed outright
    _BEFORE.update(resources.snapshot())


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in ("unit", "netns", "e2e"):
            item.add_marker(getattr(pytest.mark, parts[0]))


def pytest_runtest_setup(item):
    if (item.get_closest_marker("netns") or item.get_closest_marker("e2e")) and os.geteuid() != 0:
        if IN_CI:
            pytest.fail("netns/e2e tests need root and CI runs as root")
        pytest.skip("needs root (network namespaces)")


def pytest_sessionfinish(session, exitstatus):
    left = resources.leftovers(_BEFORE)
    if left:
        lines = [f"  {k}: {', '.join(sorted(map(str, v)))}" for k, v in left.items()]
        msg = "the test run left these behind:\n" + "\n".join(lines)
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(msg, red=True)
        if os.geteuid() == 0:
            resources.sweep()
        if session.exitstatus == 0:
            session.exitstatus = 1


def require_tool(path: str) -> str:
    """A tool the suite needs: skipped when absent on a developer machine, fatal in CI."""
    found = shutil.which(path) if "/" not in path else (path if os.path.exists(path) else None)
    if not found:
        msg = f"{path} is not installed (scripts/setup.sh installs it)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return found


_SERIAL = itertools.count(1)


def _unique(kind: str) -> str:
    """Unique for the session by construction (the owner pid scopes it to this session)."""
    return f"{resources.OWNER}{kind}{next(_SERIAL)}"


class Namespaces:
    """Creates named network namespaces (loopback up) and deletes them, whatever happens."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def make(self, kind: str = "ns") -> str:
        name = _unique(kind)
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.created.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    def cleanup(self) -> None:
        for name in reversed(self.created):
            for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                      text=True).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.created.clear()


@pytest.fixture
def namespaces():
    ns = Namespaces()
    try:
        yield ns
    finally:
        ns.cleanup()


@pytest.fixture
def node_ns(namespaces):
    """A throwaway 'node': a namespace in which plugins run as if on a VM."""
    return namespaces.make("node")


@pytest.fixture
def pod_ns(namespaces):
    """Factory of pod namespaces; returns (name, path)."""

    def make() -> tuple[str, str]:
        name = namespaces.make("pod")
        return name, f"/run/netns/{name}"

    return make


@pytest.fixture
def state_dir(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    return str(d)


@pytest.fixture
def vnet_ipam(tmp_path, state_dir):
    """vnet-ipam fed by a metadata file: a node at 10.240.0.35 with 30 secondaries (.36-.65),
    no reuse cooldown."""
    from support.cni import metadata_xml

    md = tmp_path / "interfaces.xml"
    md.write_text(metadata_xml("000D3A51C490", "10.240.0.35", [f"10.240.0.{i}" for i in range(36, 66)]))
    return {"type": "vnet-ipam", "metadataFile": str(md), "stateDir": state_dir, "reuseCooldownSeconds": 0}


@pytest.fixture(scope="session")
def cni_bin(tmp_path_factory):
    """vnet and vnet-ipam installed as on a node (`vnetctl install`), next to the reference plugins."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from vnetcni.plugins.install import install

    bin_dir = tmp_path_factory.mktemp("cnibin")
    # as `vnetctl install` does: the code copied into a root-owned prefix, imported only from there
    install(str(bin_dir), prefix=str(tmp_path_factory.mktemp("prefix")))
    return str(bin_dir)


@pytest.fixture(scope="session")
def vnet_image():
    """The vnet-cni image built from this checkout by scripts/build-image.sh, once per session
    (support/image.py); skipped off CI when the build tools are missing."""
    from support.image import vnet_image as build

    for tool in ("mmdebstrap", "podman", "gcc"):
        require_tool(tool)
    return build()
