"""Redis for production: configuration profiles, health monitoring, failover
awareness and a least-privilege ACL for the cache's L3 Redis.

>>> manager = RedisClusterManager("redis://127.0.0.1:7000")   # or a RedisConfig
>>> manager.initialize_cluster()          # standalone, cluster or sentinel; topology
>>> manager.apply_config("cache-lfu")     # CONFIG SET on every node, read back
>>> report = manager.monitor_cluster()    # one health report (and a RedisHealth event)
>>> manager.start_monitor(interval=10)    # the same, periodically, onto the cache's bus

Framework-free; every call opens short-lived administrative connections with the
configuration's credentials and TLS settings.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from ._config import RedisConfig
from ._events import EventBus, RedisAdjusted, RedisHealth
from ._redis_ops.acl import CACHE_COMMANDS, AclApply, acl_rule, apply_acl
from ._redis_ops.health import HealthReport, NodeHealth, Recommendation, Thresholds, check
from ._redis_ops.profiles import (
    DEFAULT_PROFILE,
    PROFILES,
    NodeApply,
    Profile,
    apply_profile,
    parse_bytes,
)
from ._redis_ops.topology import Node, Topology, discover
from ._redisconn import Mode, detect_mode, node_client

if TYPE_CHECKING:
    from ._core import RagCache

__all__ = [
    "CACHE_COMMANDS",
    "DEFAULT_PROFILE",
    "PROFILES",
    "AclApply",
    "AutoAdjust",
    "HealthReport",
    "Node",
    "NodeApply",
    "NodeHealth",
    "Profile",
    "ProfileReport",
    "Recommendation",
    "RedisClusterManager",
    "Thresholds",
    "Topology",
]

_log = logging.getLogger("rag_cache_plugin.redis_ops")


@dataclass(frozen=True)
class AutoAdjust:
    """Opt-in automatic changes made by :meth:`RedisClusterManager.monitor_cluster`.

    When evictions rise while the hit ratio falls, ``maxmemory`` of each primary (and
    its replicas) grows by ``step`` up to ``max_maxmemory``; at the bound, or without
    one, the policy switches to ``allkeys-lfu``.  A primary that refuses writes
    (``noeviction``, memory nearly full) is switched to ``allkeys-lfu``.
    """

    max_maxmemory: int | str | None = None
    step: float = 0.25
    allow_policy_switch: bool = True


@dataclass
class ProfileReport:
    profile: str
    mode: str
    nodes: list[NodeApply] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """Reached every node, and every runtime setting reads back as wanted."""
        return bool(self.nodes) and all(n.verified for n in self.nodes)

    @property
    def restart_required(self) -> dict[str, dict[str, tuple[str, str]]]:
        return {n.address: n.restart_required for n in self.nodes if n.restart_required}


class RedisClusterManager:
    """Operations on the Redis behind the cache's L3 tier (standalone, Redis Cluster
    or Sentinel-managed)."""

    def __init__(self, config: RedisConfig | str, *, bus: EventBus | None = None,
                 auto_adjust: AutoAdjust | None = None,
                 thresholds: Thresholds | None = None, timeout: float = 1.0) -> None:
        self.config = config if isinstance(config, RedisConfig) else RedisConfig(url=config)
        self.bus = bus
        self.auto_adjust = auto_adjust
        self.thresholds = thresholds or Thresholds()
        self.timeout = timeout
        """Socket timeout of the administrative connections."""
        self.mode: Mode | None = None
        self.topology: Topology | None = None
        self.last_report: HealthReport | None = None
        self.adjustments: list[dict[str, str]] = []
        """Every automatic change made, oldest first."""
        self._roles: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_cache(cls, cache: RagCache, **kwargs: Any) -> RedisClusterManager:
        """A manager of ``cache``'s L3 Redis that reports onto ``cache.bus``."""
        if cache.config.redis is None:
            raise ValueError("this cache has no Redis tier")
        return cls(cache.config.redis, bus=cache.bus, **kwargs)

    # -- topology -------------------------------------------------------------------

    def initialize_cluster(self) -> Topology:
        """Connect, detect standalone / cluster / sentinel, and read the topology."""
        self.mode = detect_mode(self.config)
        topo = discover(self.config, mode=self.mode, timeout=self.timeout)
        self.topology = topo
        self._roles = {n.address: n.role for n in topo.nodes if not n.failed}
        return topo

    def _refresh(self) -> Topology:
        if self.mode is None:
            return self.initialize_cluster()
        known = [n.address for n in self.topology.nodes] if self.topology else []
        topo = discover(self.config, known, mode=self.mode, timeout=self.timeout)
        self.topology = topo
        return topo

    # -- configuration profiles -------------------------------------------------------

    @staticmethod
    def render_profile(profile: str | Profile = DEFAULT_PROFILE,
                       overrides: Mapping[str, str] | None = None) -> str:
        """The profile as a ``redis.conf`` fragment."""
        return _profile(profile).render(overrides)

    def apply_config(self, profile: str | Profile = DEFAULT_PROFILE, *,
                     overrides: Mapping[str, str] | None = None,
                     dry_run: bool = False) -> ProfileReport:
        """``CONFIG SET`` the profile on every node (primaries and replicas) where the
        setting can change at run time, report the ones that need a restart, and
        verify with ``CONFIG GET``.  ``overrides`` adds or replaces settings
        (``{"maxmemory": "2gb"}``)."""
        prof = _profile(profile)
        topo = self._refresh()
        nodes = apply_profile(self.config, topo, prof, overrides, dry_run=dry_run,
                              timeout=max(self.timeout, 2.0))
        for n in nodes:
            if n.applied and not dry_run:
                _log.info("rag-cache: profile %s on %s: %s", prof.name, n.address, n.applied)
        return ProfileReport(prof.name, topo.mode, nodes, dry_run)

    # -- health -------------------------------------------------------------------------

    def monitor_cluster(self) -> HealthReport:
        """One health report of every node and of the whole; emits ``RedisHealth``
        (and ``RedisAdjusted`` for each automatic change) on the bus."""
        with self._lock:
            try:
                topo = self._refresh()
            except (redis.RedisError, OSError) as exc:
                topo = self._unreachable(str(exc))
            report = check(self.config, topo, previous=self.last_report,
                           thresholds=self.thresholds, timeout=self.timeout)
            report.promoted = [n.address for n in report.nodes if n.role == "primary"
                               and n.status != "down" and self._roles.get(n.address) == "replica"]
            for address in report.promoted:
                _log.warning("rag-cache: Redis %s was promoted to primary", address)
            for n in report.nodes:
                if n.status != "down":
                    self._roles[n.address] = n.role
            if self.auto_adjust is not None:
                self._adjust(report, topo)
            self.last_report = report
        self._emit(report)
        return report

    def _unreachable(self, error: str) -> Topology:
        """The last known topology, every node of which will be found down."""
        topo = Topology(self.mode or "standalone", list(self.topology.nodes)
                        if self.topology else [], cluster_state="fail")
        if not topo.nodes:
            host_port = self.config.url.split("@")[-1].split("//")[-1].split("/")[0]
            host, _, port = host_port.rpartition(":")
            topo.nodes = [Node(host or "localhost", int(port or 6379), "primary", failed=True)]
        _log.warning("rag-cache: Redis topology unreadable: %s", error)
        return topo

    def _emit(self, report: HealthReport) -> None:
        if self.bus is None:
            return
        latencies = [n.latency_ms for n in report.nodes if n.latency_ms is not None]
        self.bus.emit(RedisHealth(
            "", "", report.status, report.mode,
            nodes=sum(n.role != "sentinel" for n in report.nodes),
            nodes_down=sum(n.status == "down" and n.role != "sentinel" for n in report.nodes),
            slots_uncovered=16384 - report.slots_covered,
            memory_ratio=report.memory_ratio, evicted_keys=report.evicted_keys,
            expired_keys=report.expired_keys, hit_ratio=report.hit_ratio,
            ops_per_sec=report.ops_per_sec, max_latency_ms=max(latencies, default=0.0),
            promoted=tuple(report.promoted), problems=tuple(report.problems)))
        for adj in report.adjustments:
            self.bus.emit(RedisAdjusted("", "", adj["node"], adj["setting"], adj["old"],
                                        adj["new"], adj["reason"]))

    # -- automatic adjustments (opt-in) -------------------------------------------------

    def _adjust(self, report: HealthReport, topo: Topology) -> None:
        auto = self.auto_adjust
        assert auto is not None
        bound = parse_bytes(auto.max_maxmemory) if auto.max_maxmemory is not None else None
        declining = any(r.setting == "maxmemory" and "evictions rising" in r.message
                        for r in report.recommendations)
        for p in report.nodes:
            if p.role != "primary" or p.status == "down":
                continue
            if (auto.allow_policy_switch and p.maxmemory and p.maxmemory_policy == "noeviction"
                    and p.memory_ratio >= self.thresholds.memory_warning):
                self._set(report, topo, p, "maxmemory-policy", p.maxmemory_policy,
                          "allkeys-lfu", "memory nearly full and noeviction refuses writes")
            elif declining and p.evicted_keys:
                if bound is not None and 0 < p.maxmemory < bound:
                    new = min(bound, int(p.maxmemory * (1 + auto.step)))
                    self._set(report, topo, p, "maxmemory", str(p.maxmemory), str(new),
                              "evictions rising while the hit ratio falls")
                elif auto.allow_policy_switch and p.maxmemory_policy != "allkeys-lfu":
                    self._set(report, topo, p, "maxmemory-policy", p.maxmemory_policy,
                              "allkeys-lfu", "evictions rising while the hit ratio falls "
                              "and maxmemory is at its bound")

    def _set(self, report: HealthReport, topo: Topology, primary: NodeHealth, setting: str,
             old: str, new: str, reason: str) -> None:
        """Change one setting on a primary and its replicas; log and record it."""
        targets = [primary.address] + [
            r.address for r in report.nodes if r.role == "replica" and r.primary in (
                primary.address, primary.node_id) and r.status != "down"]
        for address in targets:
            host, _, port = address.rpartition(":")
            with contextlib.closing(node_client(self.config, host, int(port),
                                                timeout=max(self.timeout, 2.0))) as c:
                try:
                    c.config_set(setting, new)
                    result = "done"
                except (redis.RedisError, OSError) as exc:
                    result = f"failed: {exc}"
            adj = {"node": address, "setting": setting, "old": old, "new": new,
                   "reason": reason, "result": result}
            _log.warning("rag-cache: Redis %s: %s %s -> %s (%s): %s", address, setting, old,
                         new, reason, result)
            report.adjustments.append(adj)
            self.adjustments.append(adj)

    # -- periodic monitor -----------------------------------------------------------

    def start_monitor(self, interval: float = 10.0) -> None:
        """Run :meth:`monitor_cluster` every ``interval`` seconds in a daemon thread."""
        if self._thread is not None:
            return
        self._stop.clear()

        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.monitor_cluster()
                except Exception:  # the monitor must outlive any one bad check
                    _log.exception("rag-cache: Redis health check failed")
                self._stop.wait(interval)

        self._thread = threading.Thread(target=run, name="rag-cache-redis-monitor",
                                        daemon=True)
        self._thread.start()

    def stop_monitor(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- access control ---------------------------------------------------------------

    def acl_rule(self, user: str = "ragcache", password: str | None = None) -> tuple[str, str]:
        """``(rule, password)`` of the least-privilege cache user."""
        return acl_rule(self.config, user=user, password=password)

    def apply_acl(self, user: str = "ragcache", password: str | None = None,
                  ) -> tuple[AclApply, str]:
        """Create (or reset) the cache user on every data node; returns the result and
        the user's password."""
        rule, pw = self.acl_rule(user, password)
        topo = self._refresh()
        return apply_acl(self.config, topo, rule, user=user,
                         timeout=max(self.timeout, 2.0)), pw

    # -- lifetime ---------------------------------------------------------------------

    def close(self) -> None:
        self.stop_monitor()

    def __enter__(self) -> RedisClusterManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}") from None
