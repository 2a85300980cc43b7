"""The front door that kubelet executes: as little as possible before the real work.

VERSION is answered here without importing anything heavy. Every other verb goes to the node's
vnetd when one is listening on `<stateDir>/vnetd.sock` (the same handlers, warm), and is handled
in-process otherwise, so a node without the daemon still works.
"""

from __future__ import annotations

PLUGINS = ("vnet", "vnet-ipam")


def _local_plugin(name: str):
    if name == "vnet":
        from .vnet import VnetPlugin

        return VnetPlugin()
    from ..ipam.plugin import IpamPlugin

    return IpamPlugin()


def _note_in_process(name: str, stdin: bytes) -> None:
    """Count this call in the node's in-process log (one appended byte) so vnetd can expose how
    many calls ran without it. Never fails the call: no state directory yet, a configuration the
    handler will refuse, a read-only disk all leave it uncounted. (Parsing the few hundred bytes
    here, a second time, costs microseconds with fastjson.)"""
    import os

    from ..cni import fastjson
    from ..node.layout import NodeLayout

    try:
        path = NodeLayout.for_plugin(name, fastjson.loads(stdin)).in_process_log
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except (OSError, ValueError):
        return
    try:
        os.write(fd, b"1")
    except OSError:
        pass
    finally:
        os.close(fd)


def handle(name: str, env, stdin: bytes) -> tuple[bytes, int]:
    from ..cni import dispatch

    if env.get("CNI_COMMAND") == "VERSION":
        return dispatch.run(None, env, stdin)  # answered by the contract alone
    import os

    # The compiled front door asks vnetd first and says so when it hands over: no second ask.
    if os.environ.pop("VNET_FRONT_DOOR_TRIED", None) is None:
        from ..daemon import client

        answer = client.try_daemon(name, env, stdin)
        if answer is not None:
            return answer
    _note_in_process(name, stdin)
    plugin = _local_plugin(name)
    try:
        return dispatch.run(plugin, env, stdin)
    finally:
        close = getattr(plugin, "close", None)
        if close is not None:
            close()


def run(name: str) -> int:
    """The executable's life: stdout holds only the answer (stray writes go to stderr)."""
    from ..cni.dispatch import serve

    return serve(lambda env, stdin: handle(name, env, stdin))


def main(name: str) -> None:
    """The one-shot plugin process (the Python entry `vnetctl install` writes, the console
    scripts): run the call, then leave without the interpreter's teardown. Without vnetd every
    pod event starts one of these, so neither the cyclic garbage collector (passes over every
    object the imports create) nor the finalisation of every module is worth its ~15 % of the
    call's CPU: the answer is written straight to fd 1, state files are written, fsynced and
    closed by the handlers, threads are joined, and the kernel releases the flocks."""
    import gc
    import os
    import sys

    gc.disable()
    code = run(name)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(code)
