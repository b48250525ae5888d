"""``LocalRedis``: one throwaway ``redis-server`` (also the base of cluster nodes and
sentinels), and stopping several of them at once."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from ._commands import _admin
from ._ports import HOST, _claimed, _claimed_lock, _PortInUse, free_port
from ._process import _POLL, LocalRedisError, _guard, _live, _tail

__all__ = ["LocalRedis"]


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
