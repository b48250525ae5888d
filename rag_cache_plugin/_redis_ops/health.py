"""One health check of a Redis deployment: per-node figures and status, a status for
the whole, and recommendations drawn from them (and from the previous check)."""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import redis

from .._config import RedisConfig
from .._redisconn import node_client
from .topology import CLUSTER_SLOTS, Node, Topology

__all__ = ["HealthReport", "NodeHealth", "Recommendation", "Thresholds", "check"]

NodeStatus = Literal["ok", "warning", "critical", "down"]
Status = Literal["ok", "degraded", "down"]
_RANK = {"ok": 0, "warning": 1, "critical": 2, "down": 3}


@dataclass(frozen=True)
class Thresholds:
    memory_warning: float = 0.90
    """used/maxmemory that is a warning when the node cannot evict."""
    memory_full: float = 0.98
    fragmentation: float = 1.5
    fragmentation_min_bytes: int = 64 * 1024 * 1024
    """Fragmentation of a nearly empty server means nothing."""
    replication_lag_s: float = 30.0
    """Seconds without data from its primary (which pings every 10 s by default)."""
    replication_lag_bytes: int = 1024 * 1024
    latency_ms: float = 50.0


@dataclass
class NodeHealth:
    address: str
    role: str
    status: NodeStatus = "ok"
    node_id: str = ""
    primary: str = ""
    slots: int = 0
    link: str = ""
    """A replica's link to its primary (``up``/``down``)."""
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    used_memory: int = 0
    maxmemory: int = 0
    memory_ratio: float = 0.0
    maxmemory_policy: str = ""
    fragmentation: float = 0.0
    ops_per_sec: float = 0.0
    hits: int = 0
    misses: int = 0
    hit_ratio: float | None = None
    evicted_keys: int = 0
    expired_keys: int = 0
    keys: int = 0
    clients: int = 0
    rejected_connections: int = 0
    latency_ms: float | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class Recommendation:
    severity: Literal["info", "warning", "critical"]
    message: str
    nodes: list[str] = field(default_factory=list)
    setting: str = ""
    value: str = ""


@dataclass
class HealthReport:
    mode: str
    status: Status
    nodes: list[NodeHealth]
    taken_at: float
    slots_covered: int = CLUSTER_SLOTS
    cluster_state: str = "ok"
    hit_ratio: float | None = None
    """Over all primaries, since the previous check (or ever, on the first)."""
    evicted_keys: int = 0
    """Since the previous check, all primaries."""
    expired_keys: int = 0
    ops_per_sec: float = 0.0
    memory_ratio: float = 0.0
    promoted: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    adjustments: list[dict[str, str]] = field(default_factory=list)

    @property
    def nodes_down(self) -> int:
        return sum(n.status == "down" for n in self.nodes)

    def node(self, address: str) -> NodeHealth:
        return next(n for n in self.nodes if n.address == address)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["nodes_down"] = self.nodes_down
        return out


def _ping_ms(client: redis.Redis, n: int = 3) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        client.ping()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def _node_health(config: RedisConfig, node: Node,
                 timeout: float) -> tuple[NodeHealth, dict[str, Any]]:
    h = NodeHealth(node.address, node.role, node_id=node.node_id, primary=node.primary,
                   slots=node.slot_count)
    if node.role == "sentinel":
        config = config.model_copy(update={"username": None, "password": None})
    with contextlib.closing(node_client(config, node.host, node.port, timeout=timeout)) as c:
        try:
            h.latency_ms = _ping_ms(c)
            info: dict[str, Any] = c.info() if node.role != "sentinel" else c.info("server")
        except (redis.RedisError, OSError) as exc:
            h.status = "down"
            h.problems.append(f"unreachable: {exc}")
            return h, {}
    if node.failed:
        h.problems.append("marked failed by the cluster" if node.node_id else "marked down")
    if node.role == "sentinel":
        return h, info
    role = info.get("role")
    h.role = "primary" if role == "master" else "replica"
    h.used_memory = int(info.get("used_memory", 0))
    h.maxmemory = int(info.get("maxmemory", 0))
    h.memory_ratio = h.used_memory / h.maxmemory if h.maxmemory else 0.0
    h.maxmemory_policy = str(info.get("maxmemory_policy", ""))
    h.fragmentation = float(info.get("mem_fragmentation_ratio", 0.0))
    h.ops_per_sec = float(info.get("instantaneous_ops_per_sec", 0))
    h.hits, h.misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
    h.hit_ratio = h.hits / (h.hits + h.misses) if h.hits + h.misses else None
    h.evicted_keys = int(info.get("evicted_keys", 0))
    h.expired_keys = int(info.get("expired_keys", 0))
    h.keys = sum(int(v.get("keys", 0)) for k, v in info.items()
                 if k.startswith("db") and isinstance(v, dict))
    h.clients = int(info.get("connected_clients", 0))
    h.rejected_connections = int(info.get("rejected_connections", 0))
    if h.role == "replica":
        h.link = str(info.get("master_link_status", ""))
        h.primary = h.primary or f"{info.get('master_host')}:{info.get('master_port')}"
        h.lag_seconds = float(info.get("master_last_io_seconds_ago", -1))
    return h, info


def _judge(h: NodeHealth, t: Thresholds, info: dict[str, Any], node: Node) -> None:
    """Set the node's status from its figures."""
    if h.status == "down":
        return
    worst: NodeStatus = "ok"

    def flag(level: NodeStatus, problem: str) -> None:
        nonlocal worst
        h.problems.append(problem)
        if _RANK[level] > _RANK[worst]:
            worst = level

    if node.failed:
        worst = "down" if h.latency_ms is None else "critical"
    if info.get("loading"):
        flag("critical", "loading its data set")
    cannot_evict = h.maxmemory_policy == "noeviction" or h.maxmemory_policy.startswith("volatile")
    if h.maxmemory and cannot_evict:
        if h.memory_ratio >= t.memory_full:
            flag("critical", f"memory full ({h.memory_ratio:.0%} of maxmemory, "
                             f"{h.maxmemory_policy}): writes are refused")
        elif h.memory_ratio >= t.memory_warning:
            flag("warning", f"memory at {h.memory_ratio:.0%} of maxmemory and "
                            f"{h.maxmemory_policy} cannot evict")
    if h.fragmentation > t.fragmentation and h.used_memory > t.fragmentation_min_bytes:
        flag("warning", f"memory fragmentation {h.fragmentation:.2f}")
    if h.role == "replica":
        if h.link != "up":
            flag("critical", f"replication link {h.link or 'unknown'}")
        elif h.lag_seconds is not None and h.lag_seconds > t.replication_lag_s:
            flag("warning", f"no data from its primary for {h.lag_seconds:.0f}s")
        if h.lag_bytes is not None and h.lag_bytes > t.replication_lag_bytes:
            flag("warning", f"{h.lag_bytes} bytes behind its primary")
    if h.latency_ms is not None and h.latency_ms > t.latency_ms:
        flag("warning", f"PING takes {h.latency_ms:.1f} ms")
    h.status = worst


def _lag_from_primaries(nodes: list[NodeHealth], infos: dict[str, dict[str, Any]]) -> None:
    """A replica's lag in bytes, as its primary counts it."""
    by_addr = {n.address: n for n in nodes}
    for info in infos.values():
        if info.get("role") != "master":
            continue
        offset = int(info.get("master_repl_offset", 0))
        for k, v in info.items():
            if k.startswith("slave") and isinstance(v, dict):
                rep = by_addr.get(f"{v.get('ip')}:{v.get('port')}")
                if rep is not None:
                    rep.lag_bytes = max(0, offset - int(v.get("offset", 0)))


def check(config: RedisConfig, topology: Topology, *, previous: HealthReport | None = None,
          thresholds: Thresholds | None = None, timeout: float = 1.0) -> HealthReport:
    """Visit every node of ``topology`` and judge it, and the whole."""
    t = thresholds or Thresholds()
    nodes, infos = [], {}
    for node in topology.nodes:
        h, info = _node_health(config, node, timeout)
        nodes.append(h)
        if info:
            infos[h.address] = info
    _lag_from_primaries(nodes, infos)
    for node, h in zip(topology.nodes, nodes, strict=True):
        _judge(h, t, infos.get(h.address, {}), node)
    covered = topology.slots_covered
    if topology.mode == "cluster":  # a primary we cannot reach serves nothing to us
        covered = sum(h.slots for h in nodes if h.role == "primary" and h.status != "down")
    report = HealthReport(topology.mode, "ok", nodes, time.time(), slots_covered=covered,
                          cluster_state=topology.cluster_state)
    _totals(report, previous)
    _overall(report, topology)
    report.recommendations = recommend(report, previous, topology, infos)
    return report


def _totals(report: HealthReport, previous: HealthReport | None) -> None:
    primaries = [n for n in report.nodes if n.role == "primary" and n.status != "down"]
    before = {n.address: n for n in previous.nodes} if previous else {}

    def delta(n: NodeHealth, attr: str) -> int:
        old = before.get(n.address)
        now = int(getattr(n, attr))
        # A restarted node starts its counters again.
        return now - int(getattr(old, attr)) if old and now >= int(getattr(old, attr)) else now

    hits = sum(delta(n, "hits") for n in primaries)
    misses = sum(delta(n, "misses") for n in primaries)
    report.hit_ratio = hits / (hits + misses) if hits + misses else None
    report.evicted_keys = sum(delta(n, "evicted_keys") for n in primaries)
    report.expired_keys = sum(delta(n, "expired_keys") for n in primaries)
    report.ops_per_sec = sum(n.ops_per_sec for n in report.nodes if n.status != "down")
    report.memory_ratio = max((n.memory_ratio for n in primaries), default=0.0)


def _overall(report: HealthReport, topology: Topology) -> None:
    data = [n for n in report.nodes if n.role != "sentinel"]
    live_primaries = [n for n in data if n.role == "primary" and n.status != "down"]
    for n in report.nodes:
        report.problems.extend(f"{n.address} ({n.role}): {p}" for p in n.problems)
    if report.slots_covered < CLUSTER_SLOTS and topology.mode == "cluster":
        report.problems.append(
            f"{CLUSTER_SLOTS - report.slots_covered} slots have no live primary")
    if topology.cluster_state != "ok":
        report.problems.append(f"cluster_state is {topology.cluster_state}"
                               if topology.mode == "cluster" else "no primary reachable")
    if not live_primaries or report.slots_covered == 0:
        report.status = "down"
    elif (report.problems or any(n.status != "ok" for n in report.nodes)):
        report.status = "degraded"


def recommend(report: HealthReport, previous: HealthReport | None, topology: Topology,
              infos: dict[str, dict[str, Any]]) -> list[Recommendation]:
    """Advice for a Redis that serves as a cache."""
    out: list[Recommendation] = []
    primaries = [n for n in report.nodes if n.role == "primary" and n.status != "down"]
    full = [n.address for n in primaries if n.maxmemory and n.maxmemory_policy == "noeviction"]
    if full:
        severe = any(report.node(a).memory_ratio >= 0.9 for a in full)
        out.append(Recommendation(
            "critical" if severe else "warning",
            "maxmemory-policy noeviction refuses writes when memory is full; a cache "
            "should evict: use allkeys-lfu", full, "maxmemory-policy", "allkeys-lfu"))
    unbounded = [n.address for n in primaries if not n.maxmemory]
    if unbounded:
        out.append(Recommendation(
            "warning", "no maxmemory: Redis grows until the host runs out of memory; set "
            "maxmemory (for example 75% of the memory Redis may use)", unbounded, "maxmemory"))
    if previous is not None and previous.hit_ratio is not None and report.hit_ratio is not None:
        rising = report.evicted_keys > max(previous.evicted_keys, 0) and report.evicted_keys > 0
        falling = report.hit_ratio < previous.hit_ratio - 0.02
        if rising and falling:
            lru = [n.address for n in primaries if n.maxmemory_policy != "allkeys-lfu"]
            out.append(Recommendation(
                "warning", f"evictions rising ({previous.evicted_keys} -> "
                f"{report.evicted_keys}) while the hit ratio falls ({previous.hit_ratio:.1%} "
                f"-> {report.hit_ratio:.1%}): raise maxmemory"
                + (" or switch to allkeys-lfu" if lru else ""),
                [n.address for n in primaries], "maxmemory"))
    frag = [n.address for n in report.nodes if any("fragmentation" in p for p in n.problems)]
    if frag:
        out.append(Recommendation("info", "high fragmentation: enable activedefrag (jemalloc "
                                  "builds)", frag, "activedefrag", "yes"))
    if topology.mode == "cluster":
        lonely = [p.address for p in topology.primaries
                  if p.slots and not p.failed and not topology.replicas_of(p)]
        if lonely:
            out.append(Recommendation(
                "warning", "primaries without a replica: losing one loses its slots until "
                "it is back", lonely))
    lagging = [n.address for n in report.nodes if n.role == "replica"
               and any("behind" in p or "no data" in p for p in n.problems)]
    if lagging:
        out.append(Recommendation("info", "replicas lag behind: check the network and "
                                  "client-output-buffer-limit replica", lagging))
    slow = [n.address for n in report.nodes if any("PING takes" in p for p in n.problems)]
    if slow:
        out.append(Recommendation("info", "slow PING: the host is overloaded or far away; "
                                  "the cache's L3 deadline may be too short", slow))
    return out
