"""RtnlChannel.request_all: several netlink changes in one write, carried out in order, every
acknowledgement read (the channel stays in step for the next request), the first refusal raised
unless its errno is one the request tolerates."""

from __future__ import annotations

import errno
import subprocess

import pytest

from vnetcni.dataplane.nlmsg import NetlinkError
from vnetcni.dataplane.rtnl import RtnlChannel


def show(node: str, *what: str) -> str:
    return subprocess.run(["ip", "-n", node, *what], capture_output=True, text=True, check=True).stdout


def test_changes_in_one_write_are_done_in_order_and_refusals_are_raised(namespaces):
    node = namespaces.make("node")
    subprocess.run(["ip", "-n", node, "link", "add", "vntd0", "type", "veth", "peer", "name", "vntd1"], check=True)
    with RtnlChannel(f"/run/netns/{node}") as ch:
        idx = ch.link_index("vntd0")
        # The route through the gateway needs the address and the link up before it: order kept.
        ch.request_all([ch.address_request(idx, "10.9.0.2/24"), ch.up_request(idx),
                        ch.route_request(idx, "10.20.0.0/16", "10.9.0.1"),
                        ch.route_request(idx, "10.20.0.0/16", "10.9.0.1", tolerate=(errno.EEXIST,))])
        assert "10.9.0.2/24" in show(node, "addr", "show", "dev", "vntd0")
        assert "10.20.0.0/16 via 10.9.0.1" in show(node, "route")

        # A refused change in the middle: raised (its errno), the ones after it still done.
        with pytest.raises(NetlinkError) as caught:
            ch.request_all([ch.route_request(idx, "10.30.0.0/16", "10.9.0.1"),
                            ch.route_request(idx, "10.20.0.0/16", "10.9.0.1"),
                            ch.route_request(idx, "10.40.0.0/16", "10.9.0.1")])
        assert caught.value.code == errno.EEXIST and caught.value.request == 1  # the second one
        routes = show(node, "route")
        assert "10.30.0.0/16 via 10.9.0.1" in routes and "10.40.0.0/16 via 10.9.0.1" in routes

        # Every acknowledgement was read: the next request gets its own answer.
        assert ch.link_index("vntd0") == idx
        assert ch.link_index("vntnone") is None
        ch.request_all([])  # nothing to send: nothing waited for


def test_arp_notify_is_set_through_netlink_on_that_link_only(namespaces):
    """The pod's arp_notify (gratuitous ARP when its link comes up) is set with RTM_NEWLINK
    (IFLA_AF_SPEC / AF_INET / IFLA_INET_CONF), not by opening /proc/sys/net/ipv4/conf/eth0."""
    node = namespaces.make("node")
    subprocess.run(["ip", "-n", node, "link", "add", "vntd0", "type", "veth", "peer", "name", "vntd1"], check=True)

    def arp_notify(link: str) -> str:
        return subprocess.run(["ip", "netns", "exec", node, "sysctl", "-n", f"net.ipv4.conf.{link}.arp_notify"],
                              capture_output=True, text=True, check=True).stdout.strip()

    assert arp_notify("vntd0") == "0"
    with RtnlChannel(f"/run/netns/{node}") as ch:
        idx = ch.link_index("vntd0")
        ch.request_all([ch.arp_notify_request(idx), ch.up_request(idx)])
    assert arp_notify("vntd0") == "1" and arp_notify("vntd1") == "0"
