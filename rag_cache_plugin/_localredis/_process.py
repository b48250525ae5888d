"""Process plumbing shared by every kind of local server: the package's error, the
watchdog that kills our servers and removes their dirs when this process dies, and
small helpers (is a pid alive, a log's tail, polling until healthy)."""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .._errors import RagCacheError

if TYPE_CHECKING:
    from .standalone import LocalRedis

__all__ = ["LocalRedisError"]

_POLL = 0.05


class LocalRedisError(RagCacheError, RuntimeError):
    """A local server did not start, did not become healthy in time, or misbehaved."""


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
