"""``LocalCluster``: a throwaway Redis Cluster of ``LocalNode``s, with health checks,
failover and the faults tests inject."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import redis
from redis.cluster import ClusterNode as StartupNode
from redis.cluster import RedisCluster
from redis.crc import key_slot

from ._commands import _admin, _call, _cluster_info, _cluster_nodes, _Seen
from ._process import LocalRedisError, _guard, _wait_until
from .standalone import LocalRedis, _stop_all

__all__ = ["CLUSTER_SLOTS", "LocalCluster", "LocalNode"]

CLUSTER_SLOTS = 16384


class _ClusterServer(LocalRedis):
    _cluster_bus = True


Role = Literal["primary", "replica"]


@dataclass(eq=False)
class LocalNode:
    """One node of a :class:`LocalCluster`; ``role`` is as of the last health check."""

    server: LocalRedis
    node_id: str = ""
    role: Role = "primary"
    primary_id: str | None = None

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int | None:
        return self.server.pid

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def is_running(self) -> bool:
        return self.server.is_running

    @property
    def paused(self) -> bool:
        return self.server.paused

    @property
    def live(self) -> bool:
        """Running and not paused: able to answer."""
        return self.is_running and not self.paused

    def client(self, **kwargs: Any) -> redis.Redis:
        return self.server.client(**kwargs)

    def __repr__(self) -> str:
        return f"<LocalNode {self.role} :{self.port} pid={self.pid} id={self.node_id[:8]}>"


class LocalCluster:
    """A throwaway Redis Cluster: ``primaries`` x (1 + ``replicas_per_primary``) nodes.

    ``node_timeout_ms`` is small so that a crashed primary is failed over in seconds.
    With ``base_dir`` the nodes live in ``base_dir/node-N`` and the dir itself is kept.
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        *,
        node_timeout_ms: int = 2000,
        extra_args: Sequence[str] = (),
        base_dir: str | os.PathLike[str] | None = None,
        die_with_parent: bool = True,
        start_timeout: float = 60.0,
    ) -> None:
        if primaries < 3:
            raise ValueError("a Redis Cluster needs at least 3 primaries")
        if replicas_per_primary < 0:
            raise ValueError("replicas_per_primary must be >= 0")
        self.primaries_count = primaries
        self.replicas_per_primary = replicas_per_primary
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = tuple(extra_args)
        self.die_with_parent = die_with_parent
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        self._base_dir = Path(base_dir) if base_dir is not None else None
        self._root: Path | None = None
        self.nodes: list[LocalNode] = []

    # -- lifecycle

    def start(self) -> Self:
        """Start the nodes, create the cluster, wait until it is fully healthy."""
        if self.nodes:
            return self
        began = time.monotonic()
        if self._base_dir is None:
            self._root = Path(tempfile.mkdtemp(prefix="rag-cache-cluster-"))
            if self.die_with_parent:
                _guard("d", self._root)
        else:
            self._root = self._base_dir
            self._root.mkdir(parents=True, exist_ok=True)
        args = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",  # inside each node's own dir
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A replica that lagged (say, paused by a test) may still take over.
            "--cluster-replica-validity-factor", "0",
            *self.extra_args,
        ]  # fmt: skip
        total = self.primaries_count * (1 + self.replicas_per_primary)
        try:
            for i in range(total):
                server = _ClusterServer(
                    extra_args=args, dir=self._root / f"node-{i}",
                    die_with_parent=self.die_with_parent,
                )
                self.nodes.append(LocalNode(server))
                server.start()
            self._create()
            self.wait_ready(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _create(self) -> None:
        command = [
            "redis-cli", "--cluster", "create",
            *(f"{n.host}:{n.port}" for n in self.nodes),
            "--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes",
        ]  # fmt: skip
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=self.start_timeout,
                stdin=subprocess.DEVNULL, check=False,
            )
        except FileNotFoundError as exc:
            raise LocalRedisError("redis-cli not found on PATH") from exc
        if done.returncode != 0:
            raise LocalRedisError(
                f"redis-cli --cluster create failed ({done.returncode}):\n"
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}\n{self._logs()}"
            )

    def stop(self) -> None:
        """Stop every node at once and remove the temp dir (or the node dirs)."""
        _stop_all([n.server for n in self.nodes], 5.0)
        for node in self.nodes:
            node.server._release()
            if self._base_dir is not None:
                shutil.rmtree(node.server._dir or "", ignore_errors=True)
        if self._base_dir is None and self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            if self.die_with_parent:
                _guard("d", self._root, add=False)
        self.nodes = []

    # -- health

    def _problems(self) -> tuple[list[str], dict[str, _Seen]]:
        """What keeps the cluster from being healthy, and the agreed topology."""
        live = [n for n in self.nodes if n.live]
        if not live:
            return ["no node is running"], {}
        problems: list[str] = []
        views: list[dict[str, _Seen]] = []
        live_ports = {n.port for n in live}
        for node in live:
            with contextlib.closing(_admin(node.host, node.port)) as client:
                try:
                    info = _cluster_info(client)
                    seen = _cluster_nodes(client)
                    replication = client.info("replication")
                except (redis.RedisError, OSError) as exc:
                    problems.append(f":{node.port} {exc}")
                    continue
            where = f":{node.port}"
            if info.get("cluster_state") != "ok":
                problems.append(f"{where} cluster_state={info.get('cluster_state')}")
            for field in ("cluster_slots_assigned", "cluster_slots_ok"):
                if int(info.get(field, 0)) != CLUSTER_SLOTS:
                    problems.append(f"{where} {field}={info.get(field)}")
            if int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                problems.append(f"{where} knows {info.get('cluster_known_nodes')} nodes")
            link = replication.get("master_link_status")
            if replication.get("role") == "slave" and link != "up":
                problems.append(f"{where} master_link_status={link}")
            for other in seen.values():
                bad = other.flags & {"fail", "fail?", "handshake", "noaddr"}
                if other.port in live_ports and bad:
                    problems.append(f"{where} sees :{other.port} as {','.join(sorted(bad))}")
            views.append(seen)
        # Every live node must describe the same primaries, replicas and slot owners,
        # or a client's view would depend on which node it asked.
        def shape(view: dict[str, _Seen]) -> set[tuple[str, str | None, tuple[Any, ...]]]:
            return {
                (s.node_id, s.primary_id, s.slots)
                for s in view.values()
                if s.port in live_ports
            }

        if views and any(shape(v) != shape(views[0]) for v in views[1:]):
            problems.append("nodes disagree on the topology")
        return problems, views[0] if views else {}

    def _adopt(self, seen: dict[str, _Seen]) -> None:
        by_port = {s.port: s for s in seen.values()}
        for node in self.nodes:
            entry = by_port.get(node.port)
            if entry is None:
                continue
            node.node_id = entry.node_id
            node.role = "primary" if "master" in entry.flags else "replica"
            node.primary_id = entry.primary_id

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every live node says ``cluster_state:ok``, all slots are served,
        every replica's link is up and all nodes agree on the topology."""
        agreed: dict[str, _Seen] = {}

        def check() -> list[str]:
            nonlocal agreed
            problems, agreed = self._problems()
            return problems

        _wait_until(check, timeout, "a healthy cluster", self._logs)
        self._adopt(agreed)

    def _logs(self, lines: int = 8) -> str:
        return "\n".join(
            f"--- node :{n.port} ({n.role}, pid {n.pid}) log tail:\n{n.server.log_tail(lines)}"
            for n in self.nodes
        )

    # -- faults

    def crash(self, node: LocalNode, *, how: Literal["sigkill", "segfault"] = "sigkill") -> None:
        """Crash ``node``: SIGKILL, or ``DEBUG SEGFAULT`` (Redis' own crash path)."""
        if how == "segfault":
            with (
                contextlib.closing(_admin(node.host, node.port)) as client,
                contextlib.suppress(redis.ConnectionError, redis.TimeoutError),
            ):
                _call(client, "DEBUG", "SEGFAULT")
            assert node.server._proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.server._proc.wait(10)
        node.server.kill()

    def wait_for_failover(self, old_primary: LocalNode, timeout: float = 30.0) -> LocalNode:
        """Wait until a replica of ``old_primary`` has taken over its slots and the
        cluster is healthy again; returns the new primary."""
        old_id = old_primary.node_id
        heirs = {n.node_id for n in self.nodes if n.primary_id == old_id}
        if not heirs:
            raise LocalRedisError(f"node :{old_primary.port} has no replica to take over")
        agreed: dict[str, _Seen] = {}

        def check() -> list[str]:
            nonlocal agreed
            problems, agreed = self._problems()
            old = agreed.get(old_id)
            if old is not None and old.slots:
                problems.append(f":{old_primary.port} still owns its slots")
            if not any(
                "master" in agreed[h].flags and agreed[h].slots for h in heirs if h in agreed
            ):
                problems.append("no replica has been promoted yet")
            return problems

        _wait_until(check, timeout, f"failover of :{old_primary.port}", self._logs)
        self._adopt(agreed)
        return next(n for n in self.nodes if n.node_id in heirs and n.role == "primary")

    def restart(self, node: LocalNode, timeout: float = 30.0) -> LocalNode:
        """Start a stopped or crashed node again on its port; it rejoins (a primary that
        was failed over comes back as a replica, empty) and the cluster heals."""
        node.server.restart()
        self.wait_ready(timeout)
        return node

    def pause(self, node: LocalNode) -> None:
        node.server.pause()

    def resume(self, node: LocalNode) -> None:
        node.server.resume()

    # -- data and addresses

    @property
    def primaries(self) -> list[LocalNode]:
        return [n for n in self.nodes if n.role == "primary"]

    @property
    def replicas(self) -> list[LocalNode]:
        return [n for n in self.nodes if n.role == "replica"]

    def replicas_of(self, primary: LocalNode) -> list[LocalNode]:
        return [n for n in self.nodes if n.primary_id == primary.node_id]

    @property
    def startup_nodes(self) -> list[StartupNode]:
        """redis-py ``ClusterNode``s of every running node, for ``RedisCluster``."""
        return [
            StartupNode(n.host, n.port)  # type: ignore[no-untyped-call]
            for n in self.nodes
            if n.live
        ]

    @property
    def url(self) -> str:
        """``redis://host:port`` of a live node; ``RedisCluster.from_url`` finds the rest."""
        for node in self.primaries + self.replicas:
            if node.live:
                return node.url
        raise LocalRedisError("no node of the cluster is running")

    def client(self, **kwargs: Any) -> RedisCluster:
        return RedisCluster(startup_nodes=self.startup_nodes, **kwargs)

    @staticmethod
    def slot_for_key(key: str | bytes) -> int:
        return int(key_slot(key.encode() if isinstance(key, str) else key))

    def primary_for_key(self, key: str | bytes) -> LocalNode:
        """The node that serves ``key``'s slot now (asked of a live node)."""
        slot = self.slot_for_key(key)
        for node in self.nodes:
            if not node.live:
                continue
            with contextlib.closing(_admin(node.host, node.port)) as client:
                try:
                    seen = _cluster_nodes(client)
                except (redis.RedisError, OSError):
                    continue
            for entry in seen.values():
                if "master" in entry.flags and any(a <= slot <= b for a, b in entry.slots):
                    return next(n for n in self.nodes if n.port == entry.port)
        raise LocalRedisError(f"no live node serves slot {slot}")

    def flushall(self) -> None:
        """FLUSHALL on every live primary (roles as the cluster sees them now)."""
        for node in self.nodes:
            if not node.live:
                continue
            with contextlib.closing(_admin(node.host, node.port)) as client:
                try:
                    seen = _cluster_nodes(client)
                except (redis.RedisError, OSError):
                    continue
            self._adopt(seen)
            break
        for node in self.primaries:
            if node.live:
                node.server.flushall()

    def describe(self) -> dict[str, Any]:
        """A JSON-able picture of the cluster (what ``local_cluster_up`` persists)."""
        return {
            "url": self.url,
            "startup_nodes": [f"{n.host}:{n.port}" for n in self.nodes],
            "primaries": self.primaries_count,
            "replicas_per_primary": self.replicas_per_primary,
            "nodes": [
                {
                    "host": n.host, "port": n.port, "pid": n.pid, "role": n.role,
                    "node_id": n.node_id, "primary_id": n.primary_id,
                    "dir": str(n.server.dir),
                }
                for n in self.nodes
            ],
        }  # fmt: skip

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LocalCluster {len(self.primaries)}p/{len(self.replicas)}r {self.nodes}>"
