"""Throwaway real Redis servers (standalone, cluster, sentinel) for tests and development.

Each server is a ``redis-server`` on a free loopback port in a directory of its own,
keeps nothing on disk, and (unless told otherwise) dies with the Python process that
started it, even when that process is SIGKILLed: a small watchdog process, started once
per Python process, kills the servers and removes their directories when its pipe from
us reaches EOF.  That needs no ``prctl`` and works on any POSIX system.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode as StartupNode
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.retry import Retry
from redis.sentinel import Sentinel

from ._errors import RagCacheError

__all__ = [
    "CLUSTER_SLOTS",
    "HOST",
    "LocalCluster",
    "LocalNode",
    "LocalRedis",
    "LocalRedisError",
    "LocalSentinel",
    "free_port",
    "local_cluster_down",
    "local_cluster_status",
    "local_cluster_up",
]

HOST = "127.0.0.1"
CLUSTER_SLOTS = 16384
_BUS_OFFSET = 10000
# Below the kernel's ephemeral range (32768+ by default), so outgoing connections rarely
# sit on our ports; and a cluster bus port (+10000) then lands in 30000-39999, which no
# standalone server of ours ever picks.
_PORT_RANGE = (20000, 30000)
_RESERVED_PORTS = frozenset({6379, 16379, 26379})  # the machine's own Redis, bus, sentinel
_STATE_FILE = "local-cluster.json"
_POLL = 0.05


class LocalRedisError(RagCacheError, RuntimeError):
    """A local server did not start, did not become healthy in time, or misbehaved."""


class _PortInUse(LocalRedisError):
    """Someone else took the port between our check and the server's bind."""


# --------------------------------------------------------------------------- ports


def _can_bind(host: str, port: int) -> bool:
    # No SO_REUSEADDR: a port still in TIME_WAIT counts as taken, which errs on the safe side.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


_claimed: set[int] = set()  # ports of servers this process runs; skipped without a bind test
_claimed_lock = threading.Lock()


def free_port(*, cluster_bus: bool = False, host: str = HOST) -> int:
    """A loopback port that is free now (and, with ``cluster_bus``, so is port + 10000).

    Free now is all anyone can promise: servers retry with another port when they lose
    the race, so parallel test workers never need to coordinate.
    """
    # SystemRandom: tests that seed ``random`` (hypothesis does) must not make two
    # workers walk the same sequence of ports.
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(*_PORT_RANGE)
        if port in _RESERVED_PORTS or port in _claimed:
            continue
        if _can_bind(host, port) and (not cluster_bus or _can_bind(host, port + _BUS_OFFSET)):
            return port
    raise LocalRedisError(f"no free port in {_PORT_RANGE} on {host}")


# ------------------------------------------------------------------- the watchdog

_WATCHDOG = r"""
import os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
pids, dirs = set(), set()
for line in sys.stdin:
    op, kind, value = line[0], line[1], line[2:].rstrip("\n")
    items = pids if kind == "p" else dirs
    item = int(value) if kind == "p" else value
    if op == "+":
        items.add(item)
    else:
        items.discard(item)
# EOF: the process that started the servers is gone, cleanly or not.
has_proc = os.path.isdir("/proc")
killed = False
for pid in pids:
    if has_proc:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"redis" not in f.read():
                    continue  # the pid was reused by something that is not ours
        except OSError:
            continue
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
            killed = True
            break
        except OSError:
            pass
if killed:
    time.sleep(0.3)  # let the kernel close their log files before the dirs go
for d in dirs:
    shutil.rmtree(d, ignore_errors=True)
"""


class _Watchdog:
    """Kills registered servers and removes registered dirs once this process is gone."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self._lock = threading.Lock()
        # Its own session: a signal to our process group (Ctrl-C, a CI timeout killing
        # the group) must leave it alive to clean up after us.
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _WATCHDOG],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )

    def close(self) -> None:
        """Our clean exit: with nothing left to kill, the watchdog just ends."""
        with contextlib.suppress(OSError, ValueError, subprocess.TimeoutExpired):
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(2)

    def send(self, op: str, kind: str, value: object) -> None:
        assert self._proc.stdin is not None
        with self._lock, contextlib.suppress(OSError, ValueError):
            self._proc.stdin.write(f"{op}{kind}{value}\n")
            self._proc.stdin.flush()


_watchdog: _Watchdog | None = None
_watchdog_lock = threading.Lock()
_live: set[LocalRedis] = set()  # stopped at interpreter exit, before the watchdog's EOF


def _guard(kind: Literal["p", "d"], value: object, add: bool = True) -> None:
    """Tell the watchdog to (stop) clean(ing) up a pid or a directory."""
    global _watchdog
    with _watchdog_lock:
        # A forked child must not share its parent's watchdog: it would die with the parent.
        if _watchdog is None or _watchdog.owner != os.getpid():
            if not add:
                return
            if _watchdog is None:
                atexit.register(_at_exit)
            _watchdog = _Watchdog()
        dog = _watchdog
    dog.send("+" if add else "-", kind, value)


def _at_exit() -> None:
    for server in list(_live):
        if server._owner != os.getpid():
            continue  # a forked child exiting: the servers are its parent's
        with contextlib.suppress(Exception):
            server.stop()
    if _watchdog is not None and _watchdog.owner == os.getpid():
        _watchdog.close()


# ---------------------------------------------------------------------- helpers


def _admin(host: str, port: int, timeout: float = 1.0) -> redis.Redis:
    # No retries: a dead or paused node must cost one timeout, not a backoff series.
    return redis.Redis(
        host=host,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def _pid_alive(pid: int) -> bool:
    """Is ``pid`` a live process (a zombie counts as dead)?"""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return not Path("/proc").is_dir()
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _tail(path: Path, lines: int, start: int = 0) -> str:
    try:
        with path.open("rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def _wait_until(
    check: Callable[[], list[str]], timeout: float, what: str, logs: Callable[[], str]
) -> None:
    """Poll ``check`` (which lists what is still wrong) until it lists nothing."""
    deadline = time.monotonic() + timeout
    problems = check()
    while problems:
        if time.monotonic() > deadline:
            raise LocalRedisError(
                f"{what} not reached within {timeout:.0f}s; still: {'; '.join(problems)}"
                f"\n{logs()}"
            )
        time.sleep(_POLL * 2)
        problems = check()


# ------------------------------------------------------------------- standalone


class LocalRedis:
    """One throwaway ``redis-server`` on a free loopback port, in its own directory.

    ``extra_args`` go to the command line after ours (``["--maxmemory", "1mb"]``,
    ``["--aclfile", path]``, TLS options), so they may override any default but the
    port, the directory and the log file.
    """

    _cluster_bus = False  # cluster nodes also need port + 10000

    def __init__(
        self,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        dir: str | os.PathLike[str] | None = None,
        die_with_parent: bool = True,
        start_timeout: float = 15.0,
        executable: str = "redis-server",
    ) -> None:
        self.host = HOST
        self.port = port or 0
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self.executable = executable
        self.die_with_parent = die_with_parent
        self._pinned = port  # once started, a server keeps its port across restarts
        self._dir = Path(dir) if dir is not None else None
        self._owns_dir = dir is None
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._owner = os.getpid()

    # -- lifecycle

    def start(self) -> Self:
        """Start the server (no-op if running); returns ``self`` for chaining."""
        if self.is_running:
            return self
        if self._dir is None or (self._owns_dir and not self._dir.exists()):
            self._dir = Path(tempfile.mkdtemp(prefix="rag-cache-redis-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        if self._owns_dir and self.die_with_parent:
            _guard("d", self._dir)
        # A pinned port gets a few tries in case its last owner is still going away;
        # a fresh port gets a new pick on every loss of the race.
        lost = ""
        try:
            for attempt in range(3 if self._pinned else 8):
                port = self._pinned or free_port(cluster_bus=self._cluster_bus)
                try:
                    self._launch(port)
                except _PortInUse as exc:
                    lost = str(exc)
                    if self._pinned is not None and attempt < 2:
                        time.sleep(0.2 * (attempt + 1))
                    continue
                self._pinned = self.port = port
                with _claimed_lock:
                    _claimed.add(port)
                return self
            raise LocalRedisError(
                f"port {self._pinned or '(any)'} stayed in use; last attempt:\n{lost}"
            )
        except BaseException:
            self.stop()  # the error carries the log tail; leave no dir behind
            raise

    def _command(self, port: int) -> list[str]:
        return [
            self.executable,
            "--port", str(port),
            "--bind", self.host,
            "--dir", str(self.dir),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "no",
            "--enable-debug-command", "local",
            # "now": don't wait for lagging replicas on SIGTERM, a stop must be quick.
            "--shutdown-on-sigterm", "nosave now",
            # A primary otherwise waits 5 s for more replicas before a full sync, which
            # would dominate cluster start-up and every rejoin.
            "--repl-diskless-sync-delay", "0",
            # The crash report's memory test only slows down DEBUG SEGFAULT tests.
            "--crash-memcheck-enabled", "no",
            *self.extra_args,
        ]  # fmt: skip

    def _launch(self, port: int) -> None:
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        stdio = self.dir / "stdio.log"  # config errors go here, before the log file opens
        stdio_start = stdio.stat().st_size if stdio.exists() else 0
        with stdio.open("ab") as out:
            # Own session: Ctrl-C on the test run must not kill servers under a test's
            # teardown, and ``killpg`` also reaches a replication fork.
            proc = subprocess.Popen(
                self._command(port),
                cwd=self.dir,  # a core dump, if the system makes one, lands in our dir
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._proc, self._paused, self.port, self._owner = proc, False, port, os.getpid()
        if self.die_with_parent:
            _guard("p", proc.pid)
            _live.add(self)
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = proc.poll()
            if code is not None:
                text = _tail(self.log_path, 15, log_start) + "\n" + _tail(stdio, 15, stdio_start)
                self._forget()
                if "Address already in use" in text:
                    raise _PortInUse(text)
                raise LocalRedisError(f"redis-server on port {port} exited with {code}:\n{text}")
            if self._answers_as(proc.pid, port):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise LocalRedisError(
                    f"redis-server on port {port} did not answer within "
                    f"{self.start_timeout:.0f}s:\n{_tail(self.log_path, 15, log_start)}"
                )
            time.sleep(_POLL / 2)

    def _answers_as(self, pid: int, port: int) -> bool:
        """Does *our* process answer on ``port`` (not one that won the port race)?"""
        # Short: whatever else holds the port may accept and never answer; we poll anyway.
        client = _admin(self.host, port, timeout=0.25)
        try:
            owner = int(client.info("server")["process_id"])
        except (redis.AuthenticationError, redis.exceptions.NoPermissionError):
            return True  # an ACL file locked us out: it answers, and it must be ours
        except (redis.RedisError, OSError, KeyError, ValueError):
            return False
        finally:
            client.close()
        return owner == pid

    def stop(self, timeout: float = 5.0) -> None:
        """Shut down gracefully (SIGTERM), SIGKILL after ``timeout``; remove an owned dir."""
        _stop_all([self], timeout)
        self._release()
        if self._owns_dir and self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            if self.die_with_parent:
                _guard("d", self._dir, add=False)

    def kill(self) -> None:
        """SIGKILL the server (and any fork of it); it keeps its port for :meth:`restart`."""
        self._forget(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing (a hung host)."""
        os.kill(self._running_pid(), signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        os.kill(self._running_pid(), signal.SIGCONT)
        self._paused = False

    def restart(self) -> Self:
        """Stop if running, then start again on the same port with no data."""
        _stop_all([self], 5.0)
        if self._dir is not None:
            for stale in ("dump.rdb", "appendonlydir"):
                path = self._dir / stale
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        return self.start()

    def _forget(self, sig: signal.Signals | None = None) -> None:
        """Optionally signal the process group, reap the process, unregister its pid."""
        proc, self._proc, self._paused = self._proc, None, False
        if proc is None:
            return
        if sig is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        proc.wait()
        # The group may outlive its leader (a replication fork): take it down too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self.die_with_parent:
            _guard("p", proc.pid, add=False)

    def _release(self) -> None:
        """Done for good: no exit-time stop, and the port may go to another server.
        (A killed server keeps its port claimed, for :meth:`restart`.)"""
        _live.discard(self)
        with _claimed_lock:
            _claimed.discard(self.port)

    def _running_pid(self) -> int:
        if self._proc is None or self._proc.poll() is not None:
            raise LocalRedisError(f"redis-server on port {self.port} is not running")
        return self._proc.pid

    # -- state

    @property
    def dir(self) -> Path:
        if self._dir is None:
            raise LocalRedisError("the server has not been started")
        return self._dir

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        """True while the process exists, paused or not."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused and self.is_running

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client for this server; ``kwargs`` go to ``redis.Redis``."""
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def flushall(self) -> None:
        with contextlib.closing(_admin(self.host, self.port)) as client:
            client.flushall()

    def log_tail(self, lines: int = 20) -> str:
        if self._dir is None:
            return ""
        return _tail(self.log_path, lines) + _tail(self.dir / "stdio.log", lines)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.is_running else "stopped"
        return f"<{type(self).__name__} {self.url} pid={self.pid} {state}>"


def _stop_all(servers: Iterable[LocalRedis], timeout: float) -> None:
    """SIGTERM every running server at once, then reap each (SIGKILL the slow ones)."""
    running = [s for s in servers if s.is_running]
    for server in running:
        assert server._proc is not None
        with contextlib.suppress(ProcessLookupError):
            if server._paused:
                os.kill(server._proc.pid, signal.SIGCONT)  # a stopped process can't exit
            server._proc.terminate()
    deadline = time.monotonic() + timeout
    for server in running:
        assert server._proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            server._proc.wait(max(0.0, deadline - time.monotonic()))
        server._forget(signal.SIGKILL)


# ---------------------------------------------------------------------- cluster


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


@dataclass(frozen=True)
class _Seen:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]


def _call(client: redis.Redis, *args: str) -> Any:
    """Send a command and return its reply unparsed: redis-py's reply parsers change
    shape between versions, and plain ``Redis`` lacks the cluster commands."""
    conn = client.connection_pool.get_connection()
    try:
        conn.send_command(*args)  # type: ignore[no-untyped-call]
        return conn.read_response()
    finally:
        client.connection_pool.release(conn)


def _raw(client: redis.Redis, *args: str) -> str:
    reply = _call(client, *args)
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _fields(reply: Any) -> dict[str, str]:
    """A RESP2 flat ``[k, v, k, v]`` list or a RESP3 map, as a dict of strings."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    return {str(k): str(v) for k, v in zip(reply[::2], reply[1::2], strict=True)}


def _cluster_info(client: redis.Redis) -> dict[str, str]:
    text = _raw(client, "CLUSTER", "INFO")
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _cluster_nodes(client: redis.Redis) -> dict[str, _Seen]:
    text = _raw(client, "CLUSTER", "NODES")
    seen: dict[str, _Seen] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@")[0]
        slots = []
        for token in parts[8:]:
            if token.startswith("["):
                continue  # a slot being migrated or imported
            first, _, last = token.partition("-")
            slots.append((int(first), int(last or first)))
        seen[parts[0]] = _Seen(
            node_id=parts[0],
            port=int(address.rpartition(":")[2] or 0),
            flags=frozenset(parts[2].split(",")),
            primary_id=None if parts[3] == "-" else parts[3],
            slots=tuple(slots),
        )
    return seen


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


# --------------------------------------------------------------------- sentinel


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


# ------------------------------------------------------------ command-line helpers

# Popen objects of servers left running by ``local_cluster_up``: kept so that Python
# neither warns about them nor reaps them behind ``local_cluster_down``'s back.
_detached: list[LocalRedis] = []


def _read_state(base_dir: Path) -> dict[str, Any] | None:
    path = base_dir / _STATE_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


def _is_node_process(pid: int, port: int) -> bool:
    """Is ``pid`` still the redis-server we started on ``port``, not a reused pid?"""
    if not _pid_alive(pid):
        return False
    try:
        # Redis sets its title to "redis-server 127.0.0.1:PORT [cluster]".
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return Path("/proc").is_dir() is False
    return b"redis" in cmdline and str(port).encode() in cmdline


def local_cluster_up(
    primaries: int = 3,
    replicas: int = 1,
    base_dir: str | os.PathLike[str] = ".rag-cache/local-cluster",
    *,
    node_timeout_ms: int = 2000,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Start a cluster that outlives this process; record it in ``base_dir``.

    Returns the recorded info (``url``, ``startup_nodes``, ``nodes`` with ports and pids).
    """
    root = Path(base_dir).resolve()
    status = local_cluster_status(root)
    if any(n["alive"] for n in status["nodes"]):
        raise LocalRedisError(
            f"a local cluster recorded in {root} is still running ({status['url']}); "
            "take it down first"
        )
    local_cluster_down(root)  # clears what a dead one left behind
    cluster = LocalCluster(
        primaries, replicas, node_timeout_ms=node_timeout_ms, base_dir=root,
        die_with_parent=False, start_timeout=timeout,
    ).start()  # fmt: skip
    _detached.extend(n.server for n in cluster.nodes)
    info = {
        **cluster.describe(),
        "base_dir": str(root),
        "started_at": time.time(),
        "startup_seconds": cluster.startup_seconds,
    }
    # Written whole, then renamed: a concurrent ``status`` never reads half a file.
    tmp = root / (_STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, root / _STATE_FILE)
    return info


def local_cluster_status(base_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``base_dir`` records and how its nodes are doing now.

    ``state`` is ``"absent"`` (nothing recorded), ``"down"`` (no node answers) or the
    ``cluster_state`` a live node reports (``"ok"``, ``"fail"``).
    """
    root = Path(base_dir).resolve()
    info = _read_state(root)
    if info is None:
        return {"base_dir": str(root), "state": "absent", "running": False, "url": None,
                "nodes": []}  # fmt: skip
    state = "down"
    nodes = []
    for recorded in info["nodes"]:
        node = dict(recorded)
        node["alive"] = _is_node_process(node["pid"], node["port"])
        node["answering"] = False
        if node["alive"]:
            with contextlib.closing(_admin(node["host"], node["port"])) as client:
                try:
                    replication = client.info("replication")
                    cluster_state = _cluster_info(client).get("cluster_state", "fail")
                except (redis.RedisError, OSError):
                    pass
                else:
                    node["answering"] = True
                    node["role"] = "replica" if replication["role"] == "slave" else "primary"
                    state = cluster_state if state in ("down", "ok") else state
        nodes.append(node)
    return {
        **info,
        "state": state,
        "running": bool(nodes) and all(n["alive"] for n in nodes),
        "nodes": nodes,
    }


def local_cluster_down(base_dir: str | os.PathLike[str], timeout: float = 10.0) -> dict[str, Any]:
    """Stop the cluster recorded in ``base_dir`` and remove its node dirs and record."""
    root = Path(base_dir).resolve()
    info = _read_state(root)
    if info is None:
        return {"base_dir": str(root), "stopped": []}
    ours = [n for n in info["nodes"] if _is_node_process(n["pid"], n["port"])]
    for node in ours:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_pid_alive(n["pid"]) for n in ours) and time.monotonic() < deadline:
        time.sleep(_POLL)
    for node in ours:
        if _pid_alive(node["pid"]):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node["pid"], signal.SIGKILL)
    for node in info["nodes"]:
        shutil.rmtree(node["dir"], ignore_errors=True)
    (root / _STATE_FILE).unlink(missing_ok=True)
    pids = {n["pid"] for n in info["nodes"]}
    for server in [s for s in _detached if s.pid in pids]:
        server._forget()  # our own child when ``up`` ran in this process: reap it
        _detached.remove(server)
    return {"base_dir": str(root), "stopped": [n["pid"] for n in ours]}

