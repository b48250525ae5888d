"""Configuration profiles for a Redis that serves as the L3 cache: data, a
``redis.conf`` rendering, and live application with ``CONFIG SET`` + ``CONFIG GET``."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import redis

from .._config import RedisConfig
from .._redisconn import node_client
from .topology import Node, Topology

__all__ = ["DEFAULT_PROFILE", "PROFILES", "NodeApply", "Profile", "apply_profile",
           "parse_bytes"]


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    settings: Mapping[str, str]
    cluster_settings: Mapping[str, str] = field(default_factory=dict)
    """Applied to Redis Cluster nodes only."""

    def settings_for(self, mode: str, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        out = dict(self.settings)
        if mode == "cluster":
            out.update(self.cluster_settings)
        out.update(overrides or {})
        return out

    def render(self, overrides: Mapping[str, str] | None = None, *,
               cluster: bool = True) -> str:
        """The profile as a ``redis.conf`` fragment."""
        lines = [f"# rag-cache Redis profile {self.name!r}: {self.description}"]
        plain = {**self.settings, **(overrides or {})}
        for key, value in plain.items():
            if key in RESTART_ONLY:  # redis.conf has no end-of-line comments
                lines.append("# takes effect after a restart:")
            lines.append(f"{key} {_conf_value(value)}")
        if cluster and self.cluster_settings:
            lines.append("# Redis Cluster nodes only:")
            lines.extend(f"{k} {_conf_value(v)}" for k, v in self.cluster_settings.items())
        return "\n".join(lines) + "\n"


def _conf_value(value: str) -> str:
    return '""' if value == "" else value


# Documented for the rendering; whether a setting can change at run time is decided
# by the server itself when it is applied.
RESTART_ONLY = frozenset({"io-threads", "io-threads-do-reads", "tcp-backlog"})

_COMMON = {
    # Sampling more keys makes LFU/LRU approximate the real thing better, for a
    # little CPU per eviction.
    "maxmemory-samples": "10",
    # Freeing big values in a background thread keeps evictions and expiries from
    # stalling the event loop.
    "lazyfree-lazy-eviction": "yes",
    "lazyfree-lazy-expire": "yes",
    "lazyfree-lazy-server-del": "yes",
    "lazyfree-lazy-user-del": "yes",
    "lazyfree-lazy-user-flush": "yes",
    "replica-lazy-flush": "yes",
    "tcp-keepalive": "60",
    "timeout": "0",
    "tcp-backlog": "511",
    "io-threads": "4",
    "io-threads-do-reads": "yes",
}
_NO_PERSISTENCE = {"save": "", "appendonly": "no"}
_CLUSTER = {
    # The other shards keep serving while one is failing over: a cache misses on
    # a third of its keys for a few seconds instead of on all of them.
    "cluster-require-full-coverage": "no",
    "cluster-allow-reads-when-down": "yes",
}
_LFU = {"maxmemory-policy": "allkeys-lfu", "lfu-log-factor": "10", "lfu-decay-time": "1"}

PROFILES: Mapping[str, Profile] = MappingProxyType({
    "cache-lfu": Profile(
        "cache-lfu", "evict the least frequently used keys; no persistence",
        {**_LFU, **_COMMON, **_NO_PERSISTENCE}, _CLUSTER),
    "cache-lru": Profile(
        "cache-lru", "evict the least recently used keys; no persistence",
        {"maxmemory-policy": "allkeys-lru", **_COMMON, **_NO_PERSISTENCE}, _CLUSTER),
    "cache-persistent": Profile(
        "cache-persistent", "LFU eviction; the cache survives restarts (AOF + RDB)",
        {**_LFU, **_COMMON, "appendonly": "yes", "appendfsync": "everysec",
         "aof-use-rdb-preamble": "yes", "save": "3600 1 300 100 60 10000"}, _CLUSTER),
})
DEFAULT_PROFILE = "cache-lfu"

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2,
          "g": 1000**3, "gb": 1024**3}
_MEMORY_SETTINGS = frozenset({"maxmemory", "active-defrag-ignore-bytes",
                              "client-query-buffer-limit", "proto-max-bulk-len"})


def parse_bytes(value: str | int) -> int:
    """``"100mb"`` -> 104857600, with redis.conf's units (``k`` is 1000, ``kb`` 1024)."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", value)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"not a memory size: {value!r}")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def _same(key: str, got: str, want: str) -> bool:
    if key in _MEMORY_SETTINGS:
        with contextlib.suppress(ValueError):
            return parse_bytes(got) == parse_bytes(want)
    return " ".join(got.lower().split()) == " ".join(want.lower().split())


@dataclass
class NodeApply:
    """What applying a profile did to one node."""

    address: str
    role: str
    applied: dict[str, str] = field(default_factory=dict)
    unchanged: dict[str, str] = field(default_factory=dict)
    restart_required: dict[str, tuple[str, str]] = field(default_factory=dict)
    """setting -> (value now, value wanted): not changeable while the server runs."""
    failed: dict[str, str] = field(default_factory=dict)
    mismatched: dict[str, tuple[str, str]] = field(default_factory=dict)
    """setting -> (value read back, value wanted) after CONFIG SET."""
    error: str = ""
    """The node could not be reached."""

    @property
    def verified(self) -> bool:
        """Every runtime setting reads back as wanted."""
        return not (self.error or self.failed or self.mismatched)


def _apply_node(client: redis.Redis, node: Node, wanted: Mapping[str, str],
                dry_run: bool) -> NodeApply:
    out = NodeApply(node.address, node.role)
    current = {k: str(v) for k, v in client.config_get(*wanted).items()}
    for key, value in wanted.items():
        now = current.get(key)
        if now is None:
            out.failed[key] = "unknown setting on this server"
        elif _same(key, now, value):
            out.unchanged[key] = now
        elif dry_run:
            out.applied[key] = value
        else:
            try:
                client.config_set(key, value)
            except redis.ResponseError as exc:
                text = str(exc)
                if "immutable" in text or "protected" in text:
                    out.restart_required[key] = (now, value)
                else:
                    out.failed[key] = text
            else:
                out.applied[key] = value
    if not dry_run and out.applied:
        back = {k: str(v) for k, v in client.config_get(*out.applied).items()}
        for key in out.applied:
            if not _same(key, back.get(key, ""), wanted[key]):
                out.mismatched[key] = (back.get(key, ""), wanted[key])
    return out


def apply_profile(config: RedisConfig, topology: Topology, profile: Profile,
                  overrides: Mapping[str, str] | None = None, *,
                  dry_run: bool = False, timeout: float = 2.0) -> list[NodeApply]:
    """Apply to every data node (primaries and replicas), one setting at a time so
    that one refusal does not hide the rest; then read every change back."""
    wanted = profile.settings_for(topology.mode, overrides)
    results = []
    for node in topology.data_nodes:
        with contextlib.closing(node_client(config, node.host, node.port,
                                            timeout=timeout)) as client:
            try:
                results.append(_apply_node(client, node, wanted, dry_run))
            except (redis.RedisError, OSError) as exc:
                results.append(NodeApply(node.address, node.role, error=str(exc)))
    return results
