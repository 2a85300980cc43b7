"""What a test run may leave behind, and how to sweep it.

Every object a test creates is named with the `vnt` prefix followed by the pid of the pytest
process that made it (`vnt<pid>…`), so a leftover is recognisable, a run can prove it left
nothing, and two test sessions on one machine never sweep each other's objects.
"""

from __future__ import annotations

import os
import re
import subprocess

PREFIX = "vnt"
OWNER = f"{PREFIX}{os.getpid()}"  # prefix of every object this session creates
_OWNER_RE = re.compile(r"vnt(\d+)")


def owner_alive_elsewhere(name: str) -> bool:
    """True if the name carries the pid of another live process (a concurrent test session)."""
    m = _OWNER_RE.search(name)
    if not m or int(m.group(1)) == os.getpid():
        return False
    return os.path.exists(f"/proc/{m.group(1)}")


def netns_names() -> set[str]:
    try:
        return set(os.listdir("/run/netns"))
    except FileNotFoundError:
        return set()


def root_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def iptables_chains() -> set[str]:
    chains: set[str] = set()
    for tool in ("iptables-save", "ip6tables-save"):
        try:
            out = subprocess.run([tool], capture_output=True, text=True, timeout=30).stdout
        except (FileNotFoundError, subprocess.TimeoutExpired):
            continue
        table = ""
        for line in out.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                chains.add(f"{tool[:-5]}:{table}:{line[1:].split()[0]}")
    return chains


def process_table() -> dict[int, tuple[str, str, int]]:
    """pid -> (command name, state letter, parent pid), from /proc/PID/stat."""
    table: dict[int, tuple[str, str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        table[int(entry)] = (stat[stat.index("(") + 1:stat.rindex(")")], rest[0], int(rest[1]))
    return table


def child_processes() -> set[int]:
    """Live descendants of this process (zombies excluded)."""
    me = os.getpid()
    parents = {pid: ppid for pid, (_, state, ppid) in process_table().items() if state != "Z"}
    out: set[int] = set()
    frontier = {me}
    while frontier:
        nxt = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in out}
        out |= nxt
        frontier = nxt
    return out


def snapshot() -> dict[str, set]:
    return {
        "network namespaces": netns_names(),
        "links in the root namespace": root_links(),
        "iptables chains": iptables_chains(),
    }


def leftovers(before: dict[str, set]) -> dict[str, set]:
    after = snapshot()
    out = {k: {x for x in after[k] - before.get(k, set()) if not owner_alive_elsewhere(x)} for k in after}
    out["processes"] = child_processes()
    return {k: v for k, v in out.items() if v}


def _ours(name: str) -> bool:
    return PREFIX in name and not owner_alive_elsewhere(name)


def sweep() -> None:
    """Remove test objects of this session or of dead ones: namespaces, root links."""
    for name in netns_names():
        if _ours(name):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
    for link in root_links():
        if _ours(link):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
