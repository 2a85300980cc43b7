"""`vnetctl demo`: a 3-node VNet, pods on every node, measured connectivity, a node filled past its
capacity, every pod deleted and the pools free again, the fabric removed.

All traffic stays inside the fabric's namespaces (listeners are sockets opened inside pod
namespaces, pings run inside them, the gateway lives in the fabric namespace).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from rich.markup import escape

from ..cni.errors import CNIError, NO_ADDRESS_AVAILABLE
from . import enforcement, fabric, inventory, kernel, kubeproxy, naming, pods, probe, report
from .errors import SimError
from .model import FabricRecord
from .pods import PodRecord
from .runtime import CniRuntime

MAX_FAILURES_SHOWN = 8


@dataclass(frozen=True)
class DemoOptions:
    name: str = naming.DEFAULT_FABRIC
    keep: bool = False
    pods_per_node: int = 4
    vnetd: bool = True
    nodes: int = 3
    ips_per_node: int = 30
    workers: int = 4
    sample_per_node: int = 2
    mode: str = "bridge"
    subnet6: str = ""  # dual-stack: every pod also gets an IPv6 address, probed too


@dataclass
class Outcome:
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failures.append(what)
        return ok


def _mark(ok: bool) -> str:
    return "[green]ok[/]" if ok else "[red]FAILED[/]"


class Demo:
    def __init__(self, console, opts: DemoOptions) -> None:
        self.console = console
        self.opts = opts
        self.outcome = Outcome()
        self.fabric: FabricRecord | None = None
        self.runtimes: dict[str, CniRuntime] = {}
        self.pods: list[PodRecord] = []

    # --- helpers ---------------------------------------------------------------------------
    def step(self, title: str) -> None:
        self.console.rule(f"[bold]{title}")

    def runtime(self, node: str) -> CniRuntime:
        if node not in self.runtimes:
            self.runtimes[node] = pods.runtime_for(self.fabric.node(node))
        return self.runtimes[node]

    def _parallel(self, label: str, jobs: list, fn) -> list:
        """Run fn(job) for every job on a few threads, with a progress bar; (job, result|exc)."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        out = []
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=True) as progress:
            task = progress.add_task(label, total=len(jobs))
            with ThreadPoolExecutor(max_workers=self.opts.workers) as pool:
                futures = {pool.submit(fn, job): job for job in jobs}
                for fut in as_completed(futures):
                    try:
                        out.append((futures[fut], fut.result()))
                    except Exception as exc:
                        out.append((futures[fut], exc))
                    progress.advance(task)
        return out

    def _add(self, job: tuple[str, str]) -> PodRecord:
        node, name = job
        return pods.add_pod(self.fabric, node, name, runtime=self.runtime(node))

    def _delete(self, pod: PodRecord) -> PodRecord:
        return pods.delete_pod(self.fabric, pod.node, pod.name, pod.namespace, runtime=self.runtime(pod.node))

    # --- the story ----------------------------------------------------------------------------
    def run(self) -> bool:
        started = time.monotonic()
        self.step(f"1. a{' dual-stack' if self.opts.subnet6 else ''} VNet with {self.opts.nodes} nodes x "
                  f"{self.opts.ips_per_node} addresses, vnet in {self.opts.mode} mode")
        with self.console.status("bringing the fabric up") as status:
            self.fabric = fabric.up(fabric.FabricOptions(name=self.opts.name, nodes=self.opts.nodes,
                                                         ips_per_node=self.opts.ips_per_node,
                                                         vnetd=self.opts.vnetd, mode=self.opts.mode,
                                                         subnet6=self.opts.subnet6),
                                    progress=lambda m: (self.console.print(f"  {escape(m)}"), status.update(m)))
        mode = ("vnetd runs on every node" if all(n.vnetdPid for n in self.fabric.nodes)
                else "the plugins run in-process (no vnetd)")
        self.console.print(f"fabric [bold]{self.fabric.name}[/]: subnet {self.fabric.subnet}, gateway "
                           f"{self.fabric.gateway} in namespace {self.fabric.fabricNetns}; {mode}")
        try:
            self.start_pods()
            self.connectivity()
            self.capacity()
            self.delete_all()
        finally:
            if self.opts.keep:
                self.console.print(f"fabric [bold]{self.fabric.name}[/] left up (--keep): "
                                   f"`vnetctl fabric status --fabric {self.fabric.name}`, "
                                   f"`vnetctl fabric down --fabric {self.fabric.name}`")
            else:
                self.step("6. fabric down")
                with self.console.status("removing the fabric"):
                    removed = fabric.down(self.fabric.name)
                self.console.print(f"removed {removed['namespaces']} namespaces and "
                                   f"{removed['processes']} processes; nothing of the fabric is left")
        elapsed = time.monotonic() - started
        failures = self.outcome.failures
        if failures:
            self.console.print(f"[red bold]demo finished in {elapsed:.1f} s with {len(failures)} failed check(s):[/]")
            for line in failures[:MAX_FAILURES_SHOWN]:
                self.console.print(f"  - {escape(line)}")
            if len(failures) > MAX_FAILURES_SHOWN:
                self.console.print(f"  ... and {len(failures) - MAX_FAILURES_SHOWN} more")
            return False
        self.console.print(f"[green bold]demo finished in {elapsed:.1f} s: every check passed[/]")
        return True

    def start_pods(self) -> None:
        n = self.opts.pods_per_node
        self.step(f"2. {n} pods on every node (the CNI chain runs inside each node)")
        jobs = [(node.name, f"web-{node.name}-{i}") for node in self.fabric.nodes for i in range(1, n + 1)]
        for job, res in self._parallel("pod add", jobs, self._add):
            if isinstance(res, BaseException):
                self.outcome.check(False, f"pod {job[1]} on {job[0]}: {_err(res)}")
            else:
                self.pods.append(res)
        self.pods.sort(key=lambda p: (p.node, p.name))
        self.console.print(report.pods_table([report.pod_row(p) for p in self.pods]))
        addresses = [p.address for p in self.pods]
        self.outcome.check(len(set(addresses)) == len(addresses), "two pods got the same address")
        for p in self.pods:
            self.outcome.check(p.address in self.fabric.node(p.node).secondaries,
                               f"{p.name} got {p.address}, not one of {p.node}'s addresses")

    def connectivity(self) -> None:
        from rich.table import Table

        self.step("3. connectivity, measured (TCP with an echoed payload, and ping)")
        sample = []
        for node in self.fabric.nodes:
            sample += [p for p in self.pods if p.node == node.name][: self.opts.sample_per_node]
        if not sample:
            self.outcome.check(False, "no pods to probe")
            return
        cells: dict[tuple[str, str], str] = {}
        # Node-local pairs first, with the fabric's IPv4 counters read around them.
        local = [(s, d) for s in sample for d in sample if s is not d and s.node == d.node]
        remote = [(s, d) for s in sample for d in sample if s.node != d.node]
        before = enforcement.counters(self.fabric)
        for s, d in local:
            cells[(s.name, d.name)] = self._probe_pair(s, d, "same node")
        after = enforcement.counters(self.fabric)
        crossed = sum(after[n][k] - before[n][k] for n in after for k in after[n] if k != "spoofed_from")
        for s, d in remote:
            cells[(s.name, d.name)] = self._probe_pair(s, d, "across nodes")
        service, nodeports = self._services(sample, cells)
        for s in sample:
            t = probe.tcp(s.netns, self.fabric.fabricNetns, self.fabric.gateway)
            pg = probe.ping(s.netns, self.fabric.gateway)
            ok = self.outcome.check(t.ok and pg.ok, f"{s.name} -> gateway: tcp {t.detail}, ping {pg.detail}")
            cells[(s.name, "gateway")] = "[green]ok[/]" if ok else f"[red]{escape(_why(t, pg))}[/]"
        table = Table(title="from \\ to", title_justify="left")
        table.add_column("pod (node)")
        for d in sample:
            table.add_column(f"{d.name}\n{d.address}" + (f"\n{d.address6}" if d.address6 else ""))
        table.add_column(f"gateway\n{self.fabric.gateway}")
        if service:
            table.add_column(f"service {service.name}\n{service.clusterIP}")
        for s in sample:
            row = [f"{s.name} ({s.node})"]
            row += ["-" if s is d else cells[(s.name, d.name)] for d in sample]
            row.append(cells[(s.name, "gateway")])
            if service:
                row.append(cells[(s.name, "service")])
            table.add_row(*row)
        self.console.print(table)
        self.console.print("ok = a TCP connection to a listener in the destination (payload echoed back) and a ping "
                           "both succeeded; local = same node, fabric = across the VNet")
        if service:
            self.console.print(f"service {service.name}: kube-proxy's iptables rules on every node, one endpoint "
                               f"({service.endpoints[0]} on {sample[0].node}); ok = it answered and saw the caller's "
                               "own address (hairpin: its node's, as kube-proxy masquerades it)")
            self.console.print(f"NodePort {service.nodePort} from the gateway through every node: {nodeports}")
        family = "IPv4 and IPv6" if self.fabric.subnet6 else "IPv4"
        self.console.print(f"{len(local)} node-local probes: {crossed} {family} packets crossed the fabric meanwhile "
                           f"(fabric port counters) {_mark(crossed == 0)}")
        self.outcome.check(crossed == 0, f"node-local traffic crossed the fabric ({crossed} packets)")

    def _services(self, sample: list[PodRecord], cells: dict) -> tuple:
        """A Service (ClusterIP + NodePort) backed by the first sampled pod, called by every sampled
        pod and, through its NodePort on every node, from the gateway; then removed again."""
        backend = sample[0]
        try:
            service = kubeproxy.add_service(self.fabric, "web", [backend.name], 80, 8080,
                                            namespace=backend.namespace, node_port=0)
        except (SimError, ValueError) as exc:
            self.outcome.check(False, f"service web: {exc}")
            return None, ""
        marks = []
        try:
            with probe.Responder(backend.netns, backend.name, 8080):
                for s in sample:
                    want = self.fabric.node(s.node).primary if s is backend else s.address
                    answer = probe.call(s.netns, service.clusterIP, service.port)
                    ok = self.outcome.check(answer.ok and answer.seen_source == want,
                                            f"{s.name} -> service web: {answer.detail} (expected {want})")
                    tag = "hairpin" if s is backend else ("local" if s.node == backend.node else "fabric")
                    cells[(s.name, "service")] = f"[green]ok[/] {tag}" if ok else f"[red]{escape(answer.detail)}[/]"
                for node in self.fabric.nodes:
                    answer = probe.call(self.fabric.fabricNetns, node.primary, service.nodePort)
                    ok = self.outcome.check(answer.ok, f"NodePort through {node.name}: {answer.detail}")
                    marks.append(f"{node.name} {_mark(ok)}")
        finally:
            kubeproxy.delete_service(self.fabric, service.name, service.namespace)
        return service, ", ".join(marks)

    def _probe_pair(self, s: PodRecord, d: PodRecord, where: str) -> str:
        """TCP and ping to the pod's address (dual-stack: to both of its addresses)."""
        failed = ""
        for address in filter(None, (d.address, d.address6)):
            t = probe.tcp(s.netns, d.netns, address)
            pg = probe.ping(s.netns, address)
            if not self.outcome.check(t.ok and pg.ok, f"{s.name} -> {d.name} {address} ({where}): "
                                                      f"tcp {t.detail}, ping {pg.detail}"):
                failed = failed or f"{address}: {_why(t, pg)}"
        tag = "local" if where == "same node" else "fabric"
        return f"[green]ok[/] {tag}" if not failed else f"[red]{escape(failed)}[/]"

    def capacity(self) -> None:
        node = self.fabric.nodes[0]
        cap = inventory.capacity(node)
        self.step(f"4. capacity: {node.name} advertises max-pods {cap.max_pods} "
                  f"({cap.secondary_addresses} secondary addresses)")
        have = [p for p in self.pods if p.node == node.name]
        jobs = [(node.name, f"fill-{i}") for i in range(1, cap.max_pods - len(have) + 1)]
        for job, res in self._parallel(f"filling {node.name}", jobs, self._add):
            if isinstance(res, BaseException):
                self.outcome.check(False, f"pod {job[1]} on {node.name} (within capacity): {_err(res)}")
            else:
                self.pods.append(res)
        pods_before = self._node_links(node)
        netns_before = self._pod_netns()
        try:
            extra = self._add((node.name, "one-too-many"))
        except CNIError as exc:
            self.console.print(f"pod one-too-many on {node.name} is refused: [bold]{escape(exc.msg)}[/] "
                               f"(CNI error {exc.code})")
            self.outcome.check(exc.code == NO_ADDRESS_AVAILABLE, f"the refusal has code {exc.code}, expected 100")
        else:
            self.pods.append(extra)
            self.outcome.check(False, f"{node.name} accepted a pod beyond its capacity ({extra.address})")
        clean = self._node_links(node) == pods_before and self._pod_netns() == netns_before
        self.console.print(f"the refused pod left nothing behind (no sandbox namespace, no veth) {_mark(clean)}")
        self.outcome.check(clean, "the refused pod left something behind")

    def _node_links(self, node) -> set[str]:
        return {link["ifname"] for link in kernel.links(node.netns)}

    def _pod_netns(self) -> set[str]:
        prefix = naming.pod_netns(self.fabric.name, "0" * 12)[:-12]
        return {n for n in kernel.netns_list() if n.startswith(prefix)}

    def delete_all(self) -> None:
        self.step(f"5. deleting all {len(self.pods)} pods (DEL twice, as containerd)")
        for pod, res in self._parallel("pod del", list(self.pods), self._delete):
            if isinstance(res, BaseException):
                self.outcome.check(False, f"deleting {pod.name}: {_err(res)}")
        from rich.table import Table

        from ..daemon.reaper import wait_until_torn_down

        for node in self.fabric.nodes:  # vnetd answers a DEL before the veth is gone: its reaper finishes
            wait_until_torn_down(node.stateDir)
        table = Table(title="address pools after the deletes", title_justify="left")
        for col in ("node", "in use", "free", "cooling", "pool size"):
            table.add_column(col)
        for node in self.fabric.nodes:
            c = inventory.pool_counts(node)
            table.add_row(node.name, str(c["in use"]), str(c["free"]), str(c["cooling"]), str(c["size"]))
            self.outcome.check(c["in use"] == 0 and c["free"] + c["cooling"] == c["size"] == len(node.secondaries),
                               f"{node.name}'s pool is not back to free: {c}")
        self.console.print(table)
        self.console.print("cooling: released addresses wait out vnet-ipam's reuse cooldown (reuseCooldownSeconds, "
                           "30 s by default) before another pod gets them, so no stale connection reaches a new pod")
        left = pods.list_pods(self.fabric)
        self.outcome.check(not left and not self._pod_netns(), "pods or sandboxes left after the deletes")


def _err(exc: BaseException) -> str:
    if isinstance(exc, CNIError):
        return f"{exc.msg} (CNI error {exc.code})"
    return str(exc) or type(exc).__name__


def _why(t: probe.Probe, pg: probe.Probe) -> str:
    parts = []
    if not t.ok:
        parts.append(f"tcp: {t.detail}")
    if not pg.ok:
        parts.append(f"ping: {pg.detail}")
    return "; ".join(parts)


def run(console, opts: DemoOptions) -> bool:
    return Demo(console, opts).run()
