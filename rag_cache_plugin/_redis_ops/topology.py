"""Who is who in a Redis deployment: the nodes of a standalone server (and its
replicas), of a Redis Cluster (``CLUSTER SHARDS``, or ``CLUSTER NODES`` before 7.0)
or of a Sentinel-managed primary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import redis
from redis.connection import parse_url

from .._config import RedisConfig
from .._redisconn import Mode, detect_mode, node_client, sentinel_addresses

__all__ = ["CLUSTER_SLOTS", "Node", "Topology", "cluster_info", "discover", "raw"]

CLUSTER_SLOTS = 16384
Role = Literal["primary", "replica", "sentinel"]


@dataclass
class Node:
    """One server as the deployment describes it."""

    host: str
    port: int
    role: Role
    node_id: str = ""
    primary: str = ""
    """``host:port`` of its primary, for a replica."""
    slots: tuple[tuple[int, int], ...] = ()
    failed: bool = False
    """The cluster (or the sentinels) consider it down."""
    flags: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def slot_count(self) -> int:
        return sum(b - a + 1 for a, b in self.slots)


@dataclass
class Topology:
    mode: Mode
    nodes: list[Node] = field(default_factory=list)
    cluster_state: str = "ok"
    """``cluster_state`` of CLUSTER INFO; for other modes "ok" or "fail" (no primary)."""
    seed: str = ""
    """The node (or sentinel) that described the deployment."""

    @property
    def primaries(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "primary"]

    @property
    def replicas(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "replica"]

    @property
    def data_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.role != "sentinel"]

    def replicas_of(self, primary: Node) -> list[Node]:
        return [n for n in self.replicas if n.primary in (primary.address, primary.node_id)]

    @property
    def slots_covered(self) -> int:
        """Slots served by a primary that is not failed (all of them outside a cluster
        when the primary is up)."""
        if self.mode != "cluster":
            return CLUSTER_SLOTS if any(not p.failed for p in self.primaries) else 0
        return sum(p.slot_count for p in self.primaries if not p.failed)


def raw(client: Any, *args: str) -> Any:
    """Send a command and read its reply unparsed: redis-py's reply parsers change
    shape between versions, and a plain client lacks the cluster commands."""
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_command(*args)
        return conn.read_response()
    except BaseException:
        conn.disconnect()  # a half-read reply must not reach the next caller
        raise
    finally:
        pool.release(conn)


def _pairs(reply: Any) -> dict[str, Any]:
    """A RESP2 flat ``[k, v, k, v]`` list or a RESP3 map, as a dict."""
    if isinstance(reply, dict):
        return {str(k): v for k, v in reply.items()}
    return {str(k): v for k, v in zip(reply[::2], reply[1::2], strict=True)}


def _seeds(config: RedisConfig, known: Iterable[str]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    opts: dict[str, Any] = {}
    if not config.url.startswith("unix://"):
        opts = parse_url(config.url)  # type: ignore[no-untyped-call]
    if "host" in opts:
        out.append((opts["host"], int(opts.get("port", 6379))))
    for address in known:
        host, _, port = address.rpartition(":")
        if (host, int(port)) not in out:
            out.append((host, int(port)))
    return out


def discover(config: RedisConfig, known: Iterable[str] = (), mode: Mode | None = None,
             timeout: float = 1.0) -> Topology:
    """Ask the URL's node, else any ``known`` node, what the deployment looks like."""
    mode = mode or detect_mode(config)
    if mode == "sentinel":
        return _sentinel(config, timeout)
    errors: list[str] = []
    for host, port in _seeds(config, known):
        with contextlib.closing(node_client(config, host, port, timeout=timeout)) as client:
            try:
                topo = _cluster(client) if mode == "cluster" else _standalone(client, host, port)
            except (redis.RedisError, OSError) as exc:
                errors.append(f"{host}:{port}: {exc}")
                continue
        topo.seed = f"{host}:{port}"
        return topo
    raise redis.ConnectionError("no node answered: " + "; ".join(errors))


def _standalone(client: redis.Redis, host: str, port: int) -> Topology:
    info = client.info("replication")
    if info.get("role") == "slave":  # asked a replica: describe from its primary
        ph, pp = str(info["master_host"]), int(info["master_port"])
        with contextlib.closing(node_client_like(client, ph, pp)) as primary:
            try:
                return _standalone(primary, ph, pp)
            except (redis.RedisError, OSError):
                me = Node(host, port, "replica", primary=f"{ph}:{pp}")
                return Topology("standalone", [Node(ph, pp, "primary", failed=True), me],
                                cluster_state="fail")
    nodes = [Node(host, port, "primary")]
    for k, v in info.items():
        if k.startswith("slave") and isinstance(v, dict):
            nodes.append(Node(str(v["ip"]), int(v["port"]), "replica", primary=f"{host}:{port}"))
    return Topology("standalone", nodes)


def node_client_like(client: redis.Redis, host: str, port: int) -> redis.Redis:
    """A client of another node with ``client``'s credentials, TLS and timeouts."""
    kw = dict(client.connection_pool.connection_kwargs)
    kw.update(host=host, port=port)
    return redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=client.connection_pool.connection_class, **kw))


def cluster_info(client: redis.Redis) -> dict[str, str]:
    text = raw(client, "CLUSTER", "INFO")
    text = text.decode() if isinstance(text, bytes) else str(text)
    return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


def _slot_ranges(flat: list[Any]) -> tuple[tuple[int, int], ...]:
    ints = [int(x) for x in flat]
    return tuple((ints[i], ints[i + 1]) for i in range(0, len(ints) - 1, 2))


def _cluster(client: redis.Redis) -> Topology:
    state = cluster_info(client).get("cluster_state", "ok")
    try:
        shards = raw(client, "CLUSTER", "SHARDS")
    except redis.ResponseError:  # Redis < 7
        return Topology("cluster", _cluster_nodes(raw(client, "CLUSTER", "NODES")), state)
    nodes: list[Node] = []
    for shard in shards:
        s = _pairs(shard)
        slots = _slot_ranges(s.get("slots") or [])
        members = [_pairs(n) for n in s.get("nodes") or []]
        primary = next((m for m in members if m.get("role") == "master"), None)
        pid = str(primary["id"]) if primary else ""
        for m in members:
            host = str(m.get("ip") or m.get("endpoint"))
            port = int(m.get("port") or m.get("tls-port") or 0)
            is_primary = m.get("role") == "master"
            nodes.append(Node(
                host, port, "primary" if is_primary else "replica", node_id=str(m["id"]),
                primary="" if is_primary else pid, slots=slots if is_primary else (),
                failed=str(m.get("health")) == "fail", flags=(str(m.get("health")),)))
    # A primary that lost all its slots (failed over) is left out of CLUSTER SHARDS
    # by some versions; CLUSTER NODES still lists it, as failed.
    seen = {n.node_id for n in nodes}
    for extra in _cluster_nodes(raw(client, "CLUSTER", "NODES")):
        if extra.node_id not in seen:
            nodes.append(extra)
    # Replicas name their primary by id; give the address.
    by_id = {n.node_id: n.address for n in nodes}
    for n in nodes:
        if n.primary in by_id:
            n.primary = by_id[n.primary]
    return Topology("cluster", nodes, state)


def _cluster_nodes(text: Any) -> list[Node]:
    if isinstance(text, bytes):
        text = text.decode()
    nodes = []
    for line in str(text).splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@")[0].split(",")[0]
        host, _, port = address.rpartition(":")
        flags = tuple(parts[2].split(","))
        slots = []
        for token in parts[8:]:
            if token.startswith("["):
                continue  # a slot being migrated
            first, _, last = token.partition("-")
            slots.append((int(first), int(last or first)))
        nodes.append(Node(
            host, int(port or 0), "primary" if "master" in flags else "replica",
            node_id=parts[0], primary="" if parts[3] == "-" else parts[3],
            slots=tuple(slots), failed="fail" in flags, flags=flags))
    return nodes


def _sentinel(config: RedisConfig, timeout: float) -> Topology:
    errors = []
    for host, port in sentinel_addresses(config):
        # Sentinels share the data nodes' TLS settings but not their credentials.
        sconf = config.model_copy(update={"username": None, "password": None})
        with contextlib.closing(node_client(sconf, host, port, timeout=timeout)) as client:
            try:
                master = _pairs(raw(client, "SENTINEL", "MASTER", config.sentinel_service))
                replicas = [_pairs(r) for r in raw(client, "SENTINEL", "REPLICAS",
                                                   config.sentinel_service)]
                others = [_pairs(r) for r in raw(client, "SENTINEL", "SENTINELS",
                                                 config.sentinel_service)]
            except (redis.RedisError, OSError) as exc:
                errors.append(f"sentinel {host}:{port}: {exc}")
                continue
        mflags = tuple(str(master.get("flags", "")).split(","))
        primary = Node(str(master["ip"]), int(master["port"]), "primary", node_id=str(
            master.get("runid", "")), failed=bool({"s_down", "o_down"} & set(mflags)),
            flags=mflags)
        nodes = [primary]
        for r in replicas:
            rflags = tuple(str(r.get("flags", "")).split(","))
            nodes.append(Node(str(r["ip"]), int(r["port"]), "replica",
                              node_id=str(r.get("runid", "")), primary=primary.address,
                              failed=bool({"s_down", "o_down"} & set(rflags)), flags=rflags))
        nodes.append(Node(host, port, "sentinel"))
        for s in others:
            nodes.append(Node(str(s["ip"]), int(s["port"]), "sentinel",
                              failed="s_down" in str(s.get("flags", ""))))
        return Topology("sentinel", nodes, "fail" if primary.failed else "ok", f"{host}:{port}")
    raise redis.ConnectionError("no sentinel answered: " + "; ".join(errors))
