"""``LocalSentinel``: a throwaway primary, its replicas and the sentinels watching it."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from redis.sentinel import Sentinel

from ._commands import _admin, _call, _fields
from ._ports import HOST
from ._process import _guard, _wait_until
from .standalone import LocalRedis, _stop_all

__all__ = ["LocalSentinel"]


class _SentinelServer(LocalRedis):
    """A ``redis-server --sentinel`` watching one primary."""

    def __init__(self, monitor: str, settings: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._monitor = monitor
        self._settings = settings

    def _command(self, port: int) -> list[str]:
        # Sentinel rewrites its config file as it learns; keep it across restarts.
        conf = self.dir / "sentinel.conf"
        if not conf.exists():
            conf.write_text("\n".join([self._monitor, *self._settings]) + "\n")
        return [
            self.executable, str(conf), "--sentinel",
            "--port", str(port), "--bind", self.host, "--dir", str(self.dir),
            "--logfile", str(self.log_path), "--daemonize", "no", *self.extra_args,
        ]  # fmt: skip


class LocalSentinel:
    """A primary, ``replicas`` replicas and ``sentinels`` sentinels, all on loopback."""

    def __init__(
        self,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        master_name: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 10000,
        extra_args: Sequence[str] = (),
        die_with_parent: bool = True,
        start_timeout: float = 30.0,
    ) -> None:
        if replicas < 1 or sentinels < 1:
            raise ValueError("need at least one replica and one sentinel")
        self.master_name = master_name
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.quorum = sentinels // 2 + 1
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.extra_args = tuple(extra_args)
        self.die_with_parent = die_with_parent
        self.start_timeout = start_timeout
        self._root: Path | None = None
        self.primary: LocalRedis | None = None
        self.replicas: list[LocalRedis] = []
        self.sentinels: list[LocalRedis] = []

    def start(self) -> Self:
        if self.primary is not None:
            return self
        self._root = Path(tempfile.mkdtemp(prefix="rag-cache-sentinel-"))
        if self.die_with_parent:
            _guard("d", self._root)
        common: dict[str, Any] = {"die_with_parent": self.die_with_parent}
        try:
            self.primary = LocalRedis(
                extra_args=self.extra_args, dir=self._root / "data-0", **common
            ).start()
            for i in range(self.replica_count):
                self.replicas.append(LocalRedis(
                    extra_args=["--replicaof", HOST, str(self.primary.port), *self.extra_args],
                    dir=self._root / f"data-{i + 1}", **common,
                ).start())  # fmt: skip
            name = self.master_name
            settings = [
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {name} 1",
            ]
            monitor = f"sentinel monitor {name} {HOST} {self.primary.port} {self.quorum}"
            for i in range(self.sentinel_count):
                self.sentinels.append(_SentinelServer(
                    monitor, settings, dir=self._root / f"sentinel-{i}", **common
                ).start())  # fmt: skip
            _wait_until(self._problems, self.start_timeout, "a ready sentinel setup", self._logs)
        except BaseException:
            self.stop()
            raise
        return self

    def _problems(self, expect_port: int | None = None) -> list[str]:
        assert self.primary is not None
        want = expect_port or self.primary.port
        problems: list[str] = []
        for sentinel in self.sentinels:
            with contextlib.closing(_admin(sentinel.host, sentinel.port)) as client:
                try:
                    master = _fields(_call(client, "SENTINEL", "MASTER", self.master_name))
                    address = _call(client, "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                    self.master_name)
                except (redis.RedisError, OSError) as exc:
                    problems.append(f"sentinel :{sentinel.port} {exc}")
                    continue
            where = f"sentinel :{sentinel.port}"
            if not address or int(address[1]) != want:
                problems.append(f"{where} names {address} as primary")
            if {"s_down", "o_down"} & set(master.get("flags", "").split(",")):
                problems.append(f"{where} sees the primary down")
            if int(master.get("num-other-sentinels", 0)) != self.sentinel_count - 1:
                problems.append(f"{where} knows {master.get('num-other-sentinels')} sentinels")
            if int(master.get("num-slaves", 0)) < 1:
                problems.append(f"{where} knows no replica")
        for server in [self.primary, *self.replicas]:
            if not server.is_running:
                continue
            with contextlib.closing(_admin(server.host, server.port)) as client:
                try:
                    replication = client.info("replication")
                except (redis.RedisError, OSError) as exc:
                    problems.append(f":{server.port} {exc}")
                    continue
            if server.port == want and replication.get("role") != "master":
                problems.append(f":{server.port} is not master yet")
            if server.port != want and replication.get("master_link_status") != "up":
                problems.append(f":{server.port} replication link not up")
        return problems

    def failover(self, timeout: float = 30.0) -> LocalRedis:
        """SIGKILL the primary and wait until the sentinels have promoted a replica."""
        assert self.primary is not None
        old = self.primary
        old.kill()

        def check() -> list[str]:
            # Whichever replica the sentinels choose, every sentinel must name it.
            for server in self.replicas:
                if not server.is_running:
                    continue
                problems = self._problems(expect_port=server.port)
                if not problems:
                    self.primary = server
                    return []
            return ["no replica has been promoted yet"]

        _wait_until(check, timeout, f"sentinel failover of :{old.port}", self._logs)
        self.replicas = [s for s in [old, *self.replicas] if s is not self.primary]
        return self.primary

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(s.host, s.port) for s in self.sentinels]

    def client(self, **kwargs: Any) -> Sentinel:
        """A redis-py ``Sentinel`` over all sentinels; ``kwargs`` go to the data clients."""
        return Sentinel(self.sentinel_addresses, **kwargs)  # type: ignore[no-untyped-call]

    def master_client(self, **kwargs: Any) -> redis.Redis:
        """A client that asks the sentinels where the primary is (and asks again after
        a failover)."""
        client: redis.Redis = self.client(**kwargs).master_for(  # type: ignore[no-untyped-call]
            self.master_name
        )
        return client

    @property
    def servers(self) -> list[LocalRedis]:
        return [*([self.primary] if self.primary else []), *self.replicas, *self.sentinels]

    def stop(self) -> None:
        _stop_all(self.servers, 5.0)
        for server in self.servers:
            server._release()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            if self.die_with_parent:
                _guard("d", self._root, add=False)
        self.primary, self.replicas, self.sentinels = None, [], []

    def _logs(self) -> str:
        return "\n".join(
            f"--- :{s.port} log tail:\n{s.log_tail(8)}" for s in self.servers
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
