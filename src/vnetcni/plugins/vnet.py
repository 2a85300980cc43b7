"""The `vnet` main plugin: one veth per pod, addresses from the IPAM plugin, in one of two modes.

bridge       the host ends are ports of a bridge (with the node's NIC enslaved): pods sit on the
             VNet's L2 segment with the subnet's prefix and gateway.
transparent  no bridge (Azure CNI's default, routed like AWS VPC CNI): the pod has its address as
             a /32 (/128), its default route via a link-local gateway (169.254.1.1, fe80::1)
             pinned by a permanent neighbour entry to the host end's MAC, so the pod sends every
             packet to the node without ARP/ND; the node routes each pod address to the host end.
             The node must forward (net.ipv4.ip_forward=1, as every Kubernetes node has it).

ADD   IPAM allocates -> bridge ensured (bridge mode) -> veth created with its pod end inside the
      pod's netns -> address, neighbours, routes, MTU (and the node's routes to the pod) ->
      endpoint record written (only once all of it exists).
      Any failure undoes what this call created (never what an earlier call did); so does an
      ADD whose caller hung up or whose deadline passed before it was done (code 11).
      A repeated ADD of a complete attachment answers the same result.
DEL   works from the record (or the deterministic host name) when the netns is gone or
      CNI_NETNS is empty: veth removed, address released, record removed. Idempotent.
      In vnetd (a teardown reaper is given, vnet-ipam in-process) DEL answers before the
      kernel's veth teardown: the record is marked "tearing down" durably, keeping its address
      held back, and vnetd's reaper (daemon/reaper.py) deletes the veth, then releases the
      address and drops the record. An ADD of the same attachment meanwhile takes the teardown
      over (deletes the veth itself, then reuses the address). In-process DEL stays synchronous.
CHECK compares the kernel's view with the record.
Each of them holds the attachment's lock (state/attachments.py) from start to end, so two calls
for one attachment never interleave, in vnetd or in-process.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Callable

from ..cni import deadline
from ..cni import errors as E
from ..cni.config import NetConf
from ..cni.errors import CNIError
from ..cni.exec import exec_plugin, find_plugin
from ..cni.invocation import Invocation
from ..cni.result import DNS, Interface, IPConfig, Result, Route
from ..dataplane.model import LinkExists, PodLinkSpec
from ..node.layout import LayoutError, NodeLayout
from ..state import attachments
from .endpoints import EndpointRecord, EndpointStore, boot_id, endpoint_key, host_ifname

DEFAULT_BRIDGE = "azure0"
DEFAULT_MTU = 1500
IN_PROCESS_IPAM = "vnet-ipam"
MODE_BRIDGE = "bridge"
MODE_TRANSPARENT = "transparent"
MODES = (MODE_BRIDGE, MODE_TRANSPARENT)
# The link-local gateway of transparent mode, per IP version: the host end answers for it.
TRANSPARENT_GATEWAYS = {4: "169.254.1.1", 6: "fe80::1"}


def _default_dataplane(layout: NodeLayout):
    from ..dataplane.linux import LinuxDataplane  # pyroute2: only when the dataplane is needed

    return LinuxDataplane(lock_dir=layout.lock_dir)


_BOOT_ID: list[str] = []


def _boot_id() -> str:
    """The kernel's boot ID, read once per process (no process outlives a boot)."""
    if not _BOOT_ID:
        _BOOT_ID.append(boot_id())
    return _BOOT_ID[0]


class Settings:
    """The `vnet` keys of a network configuration, validated."""

    def __init__(self, conf: NetConf) -> None:
        self._conf = conf
        self._ipam_config = None
        self.bridge = conf.get("bridge", DEFAULT_BRIDGE)
        self.uplink = conf.get("uplink", "") or ""
        self.mtu = conf.get("mtu")
        try:
            self.layout = NodeLayout.for_plugin("vnet", conf.raw)
        except LayoutError as err:
            raise CNIError(E.INVALID_CONFIG, str(err)) from None
        self.state_dir = self.layout.state_dir
        self.mode = conf.get("mode", MODE_BRIDGE)
        if self.mode not in MODES:
            raise CNIError(E.INVALID_CONFIG, f"mode must be one of {', '.join(MODES)}, got {self.mode!r:.60}")
        for key, value in (("bridge", self.bridge), ("uplink", self.uplink)):
            if not isinstance(value, str):
                raise CNIError(E.INVALID_CONFIG, f"{key!r} must be a string")
        if not isinstance(self.bridge, str) or not self.bridge or len(self.bridge) > 15 or "/" in self.bridge:
            raise CNIError(E.INVALID_CONFIG, f"invalid bridge name {self.bridge!r}")
        if self.mtu is not None and (isinstance(self.mtu, bool) or not isinstance(self.mtu, int)
                                     or not 68 <= self.mtu <= 65535):
            raise CNIError(E.INVALID_CONFIG, f"mtu must be an integer between 68 and 65535, got {self.mtu!r}")
        if self.transparent:
            self.bridge = ""  # no bridge; `uplink` only gives the MTU
        ipam = conf.ipam
        if not isinstance(ipam.get("type"), str) or not ipam.get("type"):
            raise CNIError(E.INVALID_CONFIG, "the vnet plugin needs an 'ipam' section with a 'type'")
        self.ipam_type = ipam["type"]

    @property
    def transparent(self) -> bool:
        return self.mode == MODE_TRANSPARENT

    def ipam_config(self):
        """vnet-ipam's settings from the same configuration, parsed once per call."""
        if self._ipam_config is None:
            self._ipam_config = VnetPlugin._ipam_config(self._conf)
        return self._ipam_config


class VnetPlugin:
    def __init__(self, dataplane_factory: Callable[[NodeLayout], object] | None = None,
                 ipam: object | None = None, teardown: object | None = None) -> None:
        self._dataplane_factory = dataplane_factory or _default_dataplane
        self._dataplane = None
        self._ipam = ipam  # an in-process vnet-ipam handler (vnetd passes its warm one)
        self._teardown = teardown  # vnetd's reaper: DEL answers before the veth is gone

    def close(self) -> None:
        """Release netlink sockets (a warm vnetd keeps them; a one-shot plugin closes them)."""
        if self._dataplane is not None and hasattr(self._dataplane, "close"):
            self._dataplane.close()
            self._dataplane = None

    # --- collaborators -------------------------------------------------------------------
    def dataplane(self, settings: Settings):
        if self._dataplane is None:
            self._dataplane = self._dataplane_factory(settings.layout)
        return self._dataplane

    def _in_process_ipam(self):
        if self._ipam is None:
            from ..ipam.plugin import IpamPlugin

            self._ipam = IpamPlugin()
        return self._ipam

    def _ipam_call(self, verb: str, inv: Invocation, conf: NetConf, settings: Settings,
                   valid: list | None = None):
        """Delegate to the IPAM plugin: in-process for vnet-ipam, executed otherwise."""
        if settings.ipam_type == IN_PROCESS_IPAM:
            ipam = self._in_process_ipam()
            if verb == "ADD":
                return ipam.add_reporting(inv, conf, commit=False)
            if verb == "DEL":
                return ipam.delete(inv, conf)
            if verb == "CHECK":
                return ipam.check(inv, conf)
            if verb == "STATUS":
                return ipam.status(inv, conf)
            return ipam.gc(inv, conf, valid or [])
        binary = find_plugin(settings.ipam_type, inv.path)
        env = inv.to_env()
        env["CNI_COMMAND"] = verb
        try:
            out = exec_plugin(binary, env, inv.stdin)
        except CNIError as err:
            if err.code != E.INCOMPATIBLE_VERSION:
                raise
            out = self._exec_at_common_version(binary, env, conf, err)
        if verb == "ADD":
            if out is None:
                raise CNIError(E.DECODE_FAILURE, f"IPAM plugin {settings.ipam_type} returned no result")
            return Result.from_dict(out), True  # another IPAM cannot say: its DEL undoes its ADD
        return None

    @staticmethod
    def _exec_at_common_version(binary: str, env: dict, conf: NetConf, err: CNIError) -> dict | None:
        """An older IPAM plugin (the reference host-local 1.1.1 stops at 1.0.0): ask it what it
        speaks and call it again at the newest version we share; its result is converted back."""
        import json

        from ..cni import versions

        answer = exec_plugin(binary, {"CNI_COMMAND": "VERSION"}, json.dumps({"cniVersion": "0.3.0"}).encode())
        theirs = set((answer or {}).get("supportedVersions") or [])
        common = [v for v in versions.SUPPORTED_VERSIONS if v in theirs
                  and versions.parse(v) < versions.parse(conf.cni_version)]
        verb = env["CNI_COMMAND"]
        if verb in ("STATUS", "GC") and not (common and versions.at_least(common[-1], "1.1.0")):
            return None  # an IPAM from before 1.1.0 knows neither: ready, and nothing to collect
        if not common:
            raise err
        if verb == "CHECK" and not versions.at_least(common[-1], "0.4.0"):
            raise err
        older = dict(conf.raw, cniVersion=common[-1])
        if isinstance(older.get("prevResult"), dict):
            from ..cni.result import convert

            older["prevResult"] = convert(older["prevResult"], common[-1])
        return exec_plugin(binary, env, json.dumps(older).encode())

    # --- ADD -----------------------------------------------------------------------------
    def _attachment(self, inv: Invocation, conf: NetConf, settings: Settings, last: bool = False):
        """The attachment's lock, in vnet's lock directory and in vnet-ipam's when it differs."""
        return attachments.exclusive(self._lock_dirs(conf, settings), conf.name, inv.container_id, inv.ifname,
                                     last=last)

    def _lock_dirs(self, conf: NetConf, settings: Settings) -> list[str]:
        dirs = [settings.layout.lock_dir]
        if settings.ipam_type == IN_PROCESS_IPAM:
            dirs.append(NodeLayout(settings.ipam_config().state_dir).lock_dir)
        return dirs

    def add(self, inv: Invocation, conf: NetConf) -> Result:
        settings = Settings(conf)
        with self._attachment(inv, conf, settings):
            return self._add(inv, conf, settings)

    def _add(self, inv: Invocation, conf: NetConf, settings: Settings) -> Result:
        store = EndpointStore(settings.state_dir)
        key = endpoint_key(conf.name, inv.container_id, inv.ifname)
        dp = self.dataplane(settings)
        veth = host_ifname(conf.name, inv.container_id, inv.ifname)
        existing = store.get_for_update(key)
        owned = False  # whether the attachment's allocation is this call's to release on failure
        if existing is not None:
            # A record being torn down (its DEL answered, the reaper not done yet) is taken over
            # like a stale one: its veth is deleted here, then its held address reused.
            if existing.netns == inv.netns and not existing.tearing_down and not self._problems(dp, existing):
                return self._result_from_record(existing)  # a repeated ADD: same answer, nothing new
            # A stale attachment (sandbox restarted with the same ID): rebuild it. Its veth (and
            # with it the pod's address) is gone now, so its allocation is ours to keep or undo.
            dp.delete_pod_link(existing.host_ifname)
            store.remove(key)
            owned = True

        try:
            ipam_result, created_alloc = self._ipam_call("ADD", inv, conf, settings)
        except CNIError as err:
            # A full pool while DELs wait for their veths to go: finish those teardowns here (the
            # reaper's round, in this thread) and try once more; never take a held-back address.
            # Retried whatever reap() finished: it may have waited for a background round that
            # released the addresses itself (and so reports none of its own).
            if err.code != E.NO_ADDRESS_AVAILABLE or self._teardown is None:
                raise
            self._teardown.reap(settings.state_dir)
            ipam_result, created_alloc = self._ipam_call("ADD", inv, conf, settings)
        owned = owned or created_alloc
        if not ipam_result.ips:
            if owned:
                self._undo_ipam(inv, conf, settings)
            raise CNIError(E.INVALID_CONFIG, f"IPAM plugin {settings.ipam_type} returned no address")
        created = recorded = False
        try:
            mtu = settings.mtu or (dp.uplink_mtu(settings.uplink) if settings.uplink else DEFAULT_MTU)
            if settings.transparent:
                bridge = None
                addresses, gateways, routes, pinned = self._transparent_layout(ipam_result)
            else:
                addresses = [ip.address for ip in ipam_result.ips]
                gateways = [ip.gateway for ip in ipam_result.ips if ip.gateway]
                bridge = None
                for gw_ip in ipam_result.ips:
                    if gw_ip.gateway and not settings.uplink:
                        prefix = ipaddress.ip_interface(gw_ip.address).network.prefixlen
                        bridge = dp.ensure_bridge(settings.bridge, mtu, "", f"{gw_ip.gateway}/{prefix}")
                if bridge is None:
                    bridge = dp.ensure_bridge(settings.bridge, mtu, settings.uplink, "")
                routes = self._routes(ipam_result)
                pinned = ()
            spec = PodLinkSpec(netns=inv.netns, ifname=inv.ifname, host_ifname=veth, bridge=settings.bridge,
                               mtu=mtu, addresses=tuple(addresses),
                               routes=tuple((r.dst, r.gw) for r in routes), host_gateways=tuple(pinned))
            try:
                link = dp.create_pod_link(spec)
            except LinkExists:
                # A veth of this attachment's (deterministic) name with no record, while we hold
                # the attachment's lock: what an ADD left that died before its record was written
                # (a killed vnetd or plugin). Remove it and start afresh; if none was there, the
                # clash is in the pod and is the runtime's to see.
                if existing is not None or not dp.delete_pod_link(veth):
                    raise
                owned = True  # the leftover veth held this allocation's address; it is gone now
                link = dp.create_pod_link(spec)
            created = True
            ipam_cfg = settings.ipam_config() if settings.ipam_type == IN_PROCESS_IPAM else None
            record = EndpointRecord(
                conf.name, inv.container_id, inv.ifname, veth, bridge.name if bridge else "",
                mode=settings.mode, bridge_mac=bridge.mac if bridge else "",
                mac=link.pod_mac, host_mac=link.host_mac, mtu=mtu,
                ips=list(addresses),
                gateway=gateways[0] if gateways else "", gateways=gateways,
                routes=[{"dst": r.dst, **({"gw": r.gw} if r.gw else {})} for r in routes],
                dns=(conf.dns or ipam_result.dns.to_dict()),
                netns=inv.netns, pod_name=inv.pod_name, pod_namespace=inv.pod_namespace,
                ipam=settings.ipam_type,
                ipam_state_dir=ipam_cfg.state_dir if ipam_cfg else "",
                cooldown_seconds=ipam_cfg.cooldown_seconds if ipam_cfg else None,
                boot_id=_boot_id(),
                created=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),  # ISO 8601, UTC (no datetime import)
            )
            store.put(record)
            recorded = True
            deadline.note_created()
            deadline.commit_point()  # nobody waits for this answer any more: undo it all
        except BaseException:
            self._roll_back(inv, conf, settings, store, key, veth, recorded, created, owned)
            raise
        return self._result_from_record(record)

    def _roll_back(self, inv: Invocation, conf: NetConf, settings: Settings, store: EndpointStore, key: str,
                   veth: str, recorded: bool, created: bool, owned: bool) -> None:
        """Undo what this ADD created, in reverse order; each step is tried whatever the others do.
        An allocation the attachment held before this call (a pod's address) is never released
        while a veth that may carry it could remain."""
        if recorded:
            try:
                store.remove(key)
            except Exception:
                pass
        veth_gone = True
        if created:
            try:
                self.dataplane(settings).delete_pod_link(veth)
            except Exception:
                veth_gone = False
        if owned and veth_gone:
            self._undo_ipam(inv, conf, settings)

    @staticmethod
    def _ipam_config(conf: NetConf):
        from ..ipam.config import IpamConfig

        return IpamConfig.from_netconf(conf)

    def _undo_ipam(self, inv: Invocation, conf: NetConf, settings: Settings) -> None:
        try:
            self._ipam_call("DEL", inv, conf, settings)
        except Exception:
            pass  # the original error is what the runtime must see; GC reclaims the rest

    @staticmethod
    def _transparent_layout(ipam_result: Result):
        """Transparent mode from an IPAM result: each address as a host route (/32, /128); per
        family the link-local gateway, an on-link route to it (IPv4; IPv6 has fe80::/64 on every
        link), the IPAM's routes through it, and the IPAM subnets through it when the IPAM gave
        no default route of that family; the gateways to pin to the host end's MAC."""
        addresses, gateways, routes = [], [], []
        families = []
        for ip in ipam_result.ips:
            iface = ipaddress.ip_interface(ip.address)
            addresses.append(f"{iface.ip}/{iface.max_prefixlen}")
            if iface.version not in families:
                families.append(iface.version)
        for version in families:
            gateway = TRANSPARENT_GATEWAYS[version]
            gateways.append(gateway)
            if version == 4:
                routes.append(Route(f"{gateway}/32"))
            ipam_routes = [r for r in ipam_result.routes
                           if ipaddress.ip_network(r.dst, strict=False).version == version]
            for r in ipam_routes:
                routes.append(Route(ipaddress.ip_network(r.dst, strict=False).with_prefixlen, gateway))
            if not any(ipaddress.ip_network(r.dst, strict=False).prefixlen == 0 for r in ipam_routes):
                for ip in ipam_result.ips:
                    net = ipaddress.ip_interface(ip.address).network
                    if net.version == version and net.prefixlen < net.max_prefixlen:
                        if all(r.dst != net.with_prefixlen for r in routes):
                            routes.append(Route(net.with_prefixlen, gateway))
        return addresses, gateways, routes, gateways

    @staticmethod
    def _routes(ipam_result: Result) -> list[Route]:
        routes = list(ipam_result.routes)
        gateways = {ipaddress.ip_address(ip.gateway).version: ip.gateway for ip in ipam_result.ips if ip.gateway}
        for r in routes:
            net = ipaddress.ip_network(r.dst, strict=False)
            if not r.gw and net.prefixlen == 0 and net.version in gateways:
                r.gw = gateways[net.version]  # host-local style "routes": [{"dst": "0.0.0.0/0"}] goes via the gateway
        return routes

    @staticmethod
    def _result_from_record(rec: EndpointRecord) -> Result:
        gateways = rec.gateways or ([rec.gateway] if rec.gateway else [])

        def gateway_for(address: str) -> str:
            version = ipaddress.ip_interface(address).version
            return next((g for g in gateways if ipaddress.ip_address(g).version == version), "")

        interfaces = [Interface(rec.bridge, rec.bridge_mac)] if rec.bridge else []
        interfaces += [Interface(rec.host_ifname, rec.host_mac),
                       Interface(rec.ifname, rec.mac, rec.netns, mtu=rec.mtu)]
        return Result(
            interfaces=interfaces,
            ips=[IPConfig(a, gateway_for(a), len(interfaces) - 1) for a in rec.ips],
            routes=[Route(r["dst"], r.get("gw", "")) for r in rec.routes],
            dns=DNS.from_dict(rec.dns),
        )

    # --- DEL -----------------------------------------------------------------------------
    def delete(self, inv: Invocation, conf: NetConf) -> None:
        settings = Settings(conf)
        with self._attachment(inv, conf, settings, last=True):
            self._delete(inv, conf, settings)

    def _delete(self, inv: Invocation, conf: NetConf, settings: Settings) -> None:
        store = EndpointStore(settings.state_dir)
        key = endpoint_key(conf.name, inv.container_id, inv.ifname)
        if self._teardown is not None and settings.ipam_type == IN_PROCESS_IPAM:
            from ..daemon.reaper import now_iso

            if store.mark_tearing_down(key, now_iso()) is not None:
                self._teardown.queue(settings.state_dir)  # the veth, then the address, then the record
                return
        # The host end's name is derived, never chosen: its removal (the kernel's ~16 ms) starts
        # at once. The address is released only once the veth is gone, never while the old pod
        # end still holds it (a cooling address can be handed out early when the pool is
        # otherwise full, and reuseCooldownSeconds may be 0): what overlaps the teardown is
        # loading the in-process IPAM. A failed deletion keeps address and record: DEL is retried.
        deleted = self.dataplane(settings).begin_delete_pod_link(host_ifname(conf.name, inv.container_id, inv.ifname))
        try:
            if settings.ipam_type == IN_PROCESS_IPAM:
                self._in_process_ipam()
        finally:
            deleted()
        self._ipam_call("DEL", inv, conf, settings)  # an error here keeps the record: DEL is retried
        store.remove(key)

    # --- CHECK ---------------------------------------------------------------------------
    def check(self, inv: Invocation, conf: NetConf) -> None:
        settings = Settings(conf)
        with self._attachment(inv, conf, settings):
            self._check(inv, conf, settings)

    def _check(self, inv: Invocation, conf: NetConf, settings: Settings) -> None:
        key = endpoint_key(conf.name, inv.container_id, inv.ifname)
        record = EndpointStore(settings.state_dir).get(key)
        if record is None or record.tearing_down:
            raise CNIError(E.UNKNOWN_CONTAINER, f"no endpoint recorded for container {inv.container_id} "
                                                f"interface {inv.ifname} on network {conf.name}"
                                                + (" (it is being torn down)" if record else ""))
        problems = self._problems(self.dataplane(settings), record, inv.netns)
        prev = conf.prev_result
        if prev:
            want = {ip.address for ip in Result.from_dict(prev).ips}
            if want and want != set(record.ips):
                problems.append(f"prevResult addresses {sorted(want)} differ from the record {record.ips}")
        if problems:
            raise CNIError(E.CHECK_FAILED, "; ".join(problems))
        self._ipam_call("CHECK", inv, conf, settings)

    @staticmethod
    def _problems(dp, record: EndpointRecord, netns: str | None = None) -> list[str]:
        problems = []
        ns = netns or record.netns
        if record.netns != ns:
            problems.append(f"netns is {ns}, the record says {record.netns}")
        pod = dp.inspect_pod(ns, record.ifname)
        if not pod.exists:
            problems.append(f"interface {record.ifname} does not exist in {ns}")
        else:
            missing = [a for a in record.ips if a not in pod.addresses]
            if missing:
                problems.append(f"{record.ifname} lacks address(es) {', '.join(missing)}")
            if not pod.up:
                problems.append(f"{record.ifname} is down")
            routes = {(ipaddress.ip_network(d, strict=False).with_prefixlen, g) for d, g in pod.routes}
            for r in record.routes:
                want = (ipaddress.ip_network(r["dst"], strict=False).with_prefixlen, r.get("gw", ""))
                if want not in routes:
                    problems.append(f"route {want[0]} via {want[1] or 'link'} is missing in the pod")
        transparent = record.mode == MODE_TRANSPARENT
        if transparent and pod.exists:
            for gateway in record.gateways:
                have = pod.neighbours.get(gateway, "")
                if have.lower() != record.host_mac.lower():
                    problems.append(f"gateway {gateway} is {'pinned to ' + have if have else 'not pinned'} in "
                                    f"the pod, not to the host end's MAC {record.host_mac}")
        host = dp.inspect_host(record.host_ifname)
        if not host.exists:
            problems.append(f"host interface {record.host_ifname} does not exist")
        else:
            if transparent:
                if host.master:
                    problems.append(f"host interface {record.host_ifname} is on bridge {host.master}")
                for cidr in record.ips:
                    ip = ipaddress.ip_interface(cidr).ip
                    if f"{ip}/{ip.max_prefixlen}" not in host.routes:
                        problems.append(f"the node has no route to {ip} through {record.host_ifname}")
                    pinned = host.neighbours.get(str(ip), "")
                    if ip.version == 6 and pinned.lower() != record.mac.lower():
                        problems.append(f"the node does not pin {ip} to the pod's MAC {record.mac} "
                                        f"on {record.host_ifname}")
            elif host.master != record.bridge:
                problems.append(f"host interface {record.host_ifname} is not on bridge {record.bridge}")
            if not host.up:
                problems.append(f"host interface {record.host_ifname} is down")
            if not transparent and not host.hairpin:
                problems.append(f"host interface {record.host_ifname} has hairpin mode off (a pod "
                                "calling a Service backed by itself times out)")
        return problems

    # --- STATUS and GC -------------------------------------------------------------------
    def status(self, inv: Invocation, conf: NetConf) -> None:
        """Ready when the node has what kube-proxy needs in this mode (dataplane/prereqs.py; code
        50 with the commands that fix it) and the IPAM plugin is ready (the spec: a plugin that
        delegates asks its delegate)."""
        from ..dataplane import prereqs

        settings = Settings(conf)
        facts = self.dataplane(settings).node_facts(settings.bridge)
        missing = prereqs.problems(prereqs.evaluate(facts, bridged=not settings.transparent))
        if missing:
            raise CNIError(E.PLUGIN_NOT_AVAILABLE, missing)
        self._ipam_call("STATUS", inv, conf, settings)

    def gc(self, inv: Invocation, conf: NetConf, valid: list[dict]) -> None:
        """Remove this network's attachments the runtime does not list, except those another call
        is working on (their lock is held: an ADD in flight is not garbage)."""
        settings = Settings(conf)
        keep = {(v.get("containerID"), v.get("ifname")) for v in valid}
        store = EndpointStore(settings.state_dir)
        dp = self.dataplane(settings)
        dirs = self._lock_dirs(conf, settings)
        candidates = [(rec.container_id, rec.ifname) for rec in store.all().values()
                      if rec.network == conf.name and (rec.container_id, rec.ifname) not in keep]
        with contextlib.ExitStack() as held:
            mine = {endpoint_key(conf.name, cid, ifname) for cid, ifname in candidates
                    if all(held.enter_context(attachments.unless_busy(sd, conf.name, cid, ifname))
                           for sd in dict.fromkeys(dirs))}
            stale = {key: rec for key, rec in store.all().items() if key in mine}  # as of now, locked
            for rec in stale.values():
                dp.delete_pod_link(rec.host_ifname)
                if settings.ipam_type != IN_PROCESS_IPAM:  # an IPAM without GC: release one by one
                    self._ipam_call("DEL", Invocation(command="DEL", container_id=rec.container_id, netns="",
                                                      ifname=rec.ifname, path=inv.path, stdin=inv.stdin),
                                    conf, settings)
            if settings.ipam_type == IN_PROCESS_IPAM:
                # Releases every unlisted allocation but those of attachments busy elsewhere.
                self._ipam_call("GC", inv, conf, settings, valid)
            store.remove_many(stale)
