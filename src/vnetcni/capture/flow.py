"""Making a test flow from inside a pod's network namespace, with nothing installed in the pod:
the socket is opened inside the namespace (setns on this thread) and used from here.

The TCP socket is bound before the captures start so the trace knows its source port and can
filter on the exact 4-tuple; ICMP echo uses a raw socket with an identifier we choose.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

from ..dataplane.netns import entered


@dataclass
class FlowOutcome:
    protocol: str
    result: str          # "connected", "refused", "timed out", "reply", "no reply", "error: …"
    answered: bool       # the destination (or something on the way) answered


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _bound_socket_in(pod_netns: str, family: int, kind: int, proto: int, source: str) -> socket.socket:
    """A socket made inside the pod's namespace and bound to `source` (closed if the bind fails)."""
    with entered(pod_netns):
        sock = socket.socket(family, kind, proto)
    try:
        sock.bind((source, 0))
    except BaseException:
        sock.close()
        raise
    return sock


class TcpProbe:
    """A TCP socket in the pod's namespace, bound to a known source port, connected on demand."""

    def __init__(self, pod_netns: str, source: str, destination: str, port: int) -> None:
        self.destination, self.port = destination, port
        self.sock = _bound_socket_in(pod_netns, _family(destination), socket.SOCK_STREAM, 0, source)
        self.source_port = self.sock.getsockname()[1]

    def run(self, timeout: float) -> FlowOutcome:
        self.sock.settimeout(timeout)
        try:
            self.sock.connect((self.destination, self.port))
            return FlowOutcome("tcp", "connected", True)
        except ConnectionRefusedError:
            return FlowOutcome("tcp", "refused (RST)", True)
        except (TimeoutError, socket.timeout):
            return FlowOutcome("tcp", f"timed out after {timeout:g} s", False)
        except OSError as exc:
            answered = exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
            return FlowOutcome("tcp", f"error: {exc.strerror}", answered)
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


class IcmpProbe:
    """One ICMP (or ICMPv6) echo request from the pod; waits for the matching reply."""

    def __init__(self, pod_netns: str, source: str, destination: str) -> None:
        self.destination = destination
        self.v6 = _family(destination) == socket.AF_INET6
        proto = socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP
        self.sock = _bound_socket_in(pod_netns, _family(destination), socket.SOCK_RAW, proto, source)
        self.ident = os.getpid() & 0xFFFF

    def run(self, timeout: float) -> FlowOutcome:
        try:
            echo_type, reply_type = (128, 129) if self.v6 else (8, 0)
            body = struct.pack("!HH", self.ident, 1) + b"vnetctl trace".ljust(32, b".")
            header = struct.pack("!BBH", echo_type, 0, 0)
            csum = 0 if self.v6 else _checksum(header + body)  # the kernel sums ICMPv6
            self.sock.sendto(struct.pack("!BBH", echo_type, 0, csum) + body, (self.destination, 0))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([self.sock], [], [], left)
                if not ready:
                    break
                data, peer = self.sock.recvfrom(2048)
                icmp = data if self.v6 else data[(data[0] & 0x0F) * 4:]
                if (peer[0] == self.destination and len(icmp) >= 8 and icmp[0] == reply_type
                        and struct.unpack("!H", icmp[4:6])[0] == self.ident):
                    return FlowOutcome("icmp", "reply", True)
            return FlowOutcome("icmp", f"no reply within {timeout:g} s", False)
        except OSError as exc:
            return FlowOutcome("icmp", f"error: {exc.strerror}", False)
        finally:
            self.sock.close()

    def close(self) -> None:
        self.sock.close()
