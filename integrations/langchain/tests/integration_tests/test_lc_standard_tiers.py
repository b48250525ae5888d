"""langchain-tests' standard cache suites against RagLLMCache over every tier set-up:
memory + SQLite, memory + SQLite + Redis, and Redis Cluster (memory only runs in the
unit tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from langchain_core.caches import BaseCache
from langchain_rag_cache import RagLLMCache
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite

from rag_cache_plugin import CacheConfig, RedisConfig


class TestSqliteSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, tmp_path: Path) -> Iterator[BaseCache]:
        with RagLLMCache(CacheConfig(sqlite_path=tmp_path / "c.db")) as c:
            yield c


class TestSqliteAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, tmp_path: Path) -> AsyncIterator[BaseCache]:
        async with RagLLMCache(CacheConfig(sqlite_path=tmp_path / "c.db")) as c:
            yield c


@pytest.mark.redis
class TestRedisSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, tmp_path: Path, redis_url: str) -> Iterator[BaseCache]:
        cfg = CacheConfig(sqlite_path=tmp_path / "c.db", redis=RedisConfig(url=redis_url))
        with RagLLMCache(cfg) as c:
            yield c


@pytest.mark.redis
class TestRedisAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, tmp_path: Path, redis_url: str) -> AsyncIterator[BaseCache]:
        cfg = CacheConfig(sqlite_path=tmp_path / "c.db", redis=RedisConfig(url=redis_url))
        async with RagLLMCache(cfg) as c:
            yield c


@pytest.mark.redis
class TestClusterSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, cluster_url: str) -> Iterator[BaseCache]:
        with RagLLMCache(CacheConfig(redis=RedisConfig(url=cluster_url))) as c:
            yield c


@pytest.mark.redis
class TestClusterAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, cluster_url: str) -> AsyncIterator[BaseCache]:
        async with RagLLMCache(CacheConfig(redis=RedisConfig(url=cluster_url))) as c:
            yield c


@pytest.mark.redis
def test_a_new_process_reads_what_another_stored(tmp_path: Path, redis_url: str) -> None:
    """Across the Redis tier, with the marks naming the tier that answered."""
    from langchain_core.load import dumps
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration

    prompt, llm = dumps([HumanMessage("q")]), "model"
    cfg = CacheConfig(redis=RedisConfig(url=redis_url))
    with RagLLMCache(cfg) as a, RagLLMCache(cfg) as b:
        a.update(prompt, llm, [ChatGeneration(message=AIMessage("from a"))])
        got = b.lookup(prompt, llm)
        assert got is not None and got[0].text == "from a"
        assert got[0].message.response_metadata["rag_cache"]["tier"] == "l3"  # type: ignore[attr-defined]
