"""Real throwaway Redis servers for the test suite: a pytest plugin.

The servers start on first use, on free loopback ports (never an existing Redis), and
stop at the end of the session.  Under pytest-xdist every worker runs its own.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from rag_cache_plugin._localredis import LocalCluster, LocalRedis

# A test that leaves the shared cluster unhealthy fails the next one after this long,
# with the cluster's own account of what is wrong.
CLUSTER_HEAL_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def redis_executable() -> str:
    """Path of ``redis-server``; fails (never skips) when Redis is not installed."""
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found on PATH. The Redis tests run against real "
            "servers (Redis >= 7.0) and are never skipped: install Redis, e.g. "
            "`apt-get install redis-server`, and run the tests again.",
            pytrace=False,
        )
    path = shutil.which("redis-server")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def redis_server(redis_executable: str) -> Iterator[LocalRedis]:
    """A standalone server for the whole session; prefer ``redis_url`` in tests."""
    server = LocalRedis(executable=redis_executable).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(redis_executable: str) -> Iterator[LocalCluster]:
    """A 3-primary / 3-replica cluster for the whole session; prefer ``cluster_url``.

    Don't crash or pause its nodes: fault tests start a ``LocalCluster`` of their own.
    """
    cluster = LocalCluster(3, 1).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> Iterator[str]:
    """``redis://`` URL of the session's standalone server, emptied after the test."""
    # A test that paused or killed the shared server must not sink every later one.
    if redis_server.paused:
        redis_server.resume()
    if not redis_server.is_running:
        redis_server.restart()
    yield redis_server.url
    redis_server.flushall()


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> Iterator[str]:
    """``redis://`` URL of one node of the session's cluster, emptied after the test."""
    redis_cluster.wait_ready(CLUSTER_HEAL_TIMEOUT)  # a few ms when healthy
    yield redis_cluster.url
    redis_cluster.flushall()
