"""Netlink look-ups inside a given network namespace (pyroute2, imported only when needed).

A netlink socket stays in the namespace it was opened in, so each look-up opens its socket
inside the namespace (dataplane.netns.entered) and then works from wherever it is.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from typing import Iterator

from ..dataplane.netns import entered
from .errors import CaptureError


@contextlib.contextmanager
def route_socket(netns: str | None) -> Iterator:
    """An IPRoute socket in `netns` (a path; None means this process's namespace)."""
    from pyroute2 import IPRoute

    if netns:
        try:
            with entered(netns):
                ipr = IPRoute()
        except OSError as exc:
            raise CaptureError(f"cannot enter network namespace {netns}: {exc.strerror}",
                               "is the node (or pod) still there?") from None
    else:
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def link_kind(link) -> str | None:
    return link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")


def links(ipr) -> dict[int, dict]:
    """Every link by index: name, kind, master index, peer index and peer netnsid, MAC, state."""
    out: dict[int, dict] = {}
    for link in ipr.get_links():
        out[link["index"]] = {
            "index": link["index"],
            "name": link.get("IFLA_IFNAME"),
            "kind": link_kind(link),
            "master": link.get("IFLA_MASTER"),
            "link": link.get("IFLA_LINK"),
            "link_netnsid": link.get("IFLA_LINK_NETNSID"),
            "mac": link.get("IFLA_ADDRESS"),
            "up": bool(link["flags"] & 1),
        }
    return out


def link_named(ipr, name: str) -> dict | None:
    for link in links(ipr).values():
        if link["name"] == name:
            return link
    return None


def addresses(ipr, index: int | None = None) -> list[str]:
    """Addresses in CIDR form, optionally only those of one link."""
    out = []
    for a in ipr.get_addr():
        if index is None or a["index"] == index:
            out.append(f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}")
    return out


def netnsid_of(ipr, netns_path: str | None) -> int | None:
    """The id the socket's namespace gives to the namespace at `netns_path` (None: unassigned)."""
    target = netns_path or "/proc/self/ns/net"
    fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    try:
        nsid = ipr.get_netnsid(fd=fd).get("nsid")
    finally:
        os.close(fd)
    return None if nsid is None or nsid < 0 else nsid


def route_oif(ipr, address: str) -> int | None:
    try:
        routes = ipr.route("get", dst=address)
    except Exception:  # noqa: BLE001 - "no route" comes back as a NetlinkError
        return None
    return routes[0].get("RTA_OIF") if routes else None


def neighbour_mac(ipr, address: str) -> tuple[str, int] | None:
    """(MAC, interface index) of a usable neighbour entry for `address`."""
    family = 10 if ipaddress.ip_address(address).version == 6 else 2
    bad_states = {0x01, 0x20}  # NUD_INCOMPLETE, NUD_FAILED
    for n in ipr.get_neighbours(family=family):
        if n.get("NDA_DST") == address and n.get("NDA_LLADDR") and n["state"] not in bad_states:
            return n.get("NDA_LLADDR"), n["ifindex"]
    return None


def fdb_port(ipr, bridge_index: int, mac: str) -> int | None:
    """The bridge port a MAC was learned on (or statically put on), from the forwarding table."""
    mac = mac.lower()
    for entry in ipr.fdb("dump"):
        if (entry.get("NDA_LLADDR") or "").lower() != mac:
            continue
        port = entry["ifindex"]
        if entry.get("NDA_MASTER") == bridge_index and port != bridge_index:
            return port
    return None
