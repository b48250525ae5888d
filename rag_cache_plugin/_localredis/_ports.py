"""Free loopback ports for the servers: picked at random, below the ephemeral range,
and remembered while a server of ours holds them."""

from __future__ import annotations

import random
import socket
import threading

from ._process import LocalRedisError

__all__ = ["HOST", "free_port"]

HOST = "127.0.0.1"
_BUS_OFFSET = 10000
# Below the kernel's ephemeral range (32768+ by default), so outgoing connections rarely
# sit on our ports; and a cluster bus port (+10000) then lands in 30000-39999, which no
# standalone server of ours ever picks.
_PORT_RANGE = (20000, 30000)
_RESERVED_PORTS = frozenset({6379, 16379, 26379})  # the machine's own Redis, bus, sentinel


class _PortInUse(LocalRedisError):
    """Someone else took the port between our check and the server's bind."""


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
