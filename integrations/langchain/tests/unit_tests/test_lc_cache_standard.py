"""langchain-tests' standard cache suites against a memory-only RagLLMCache (the other
tier set-ups run in the integration tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from langchain_core.caches import BaseCache
from langchain_rag_cache import RagLLMCache
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite

from rag_cache_plugin import CacheConfig


class TestMemorySync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> Iterator[BaseCache]:
        with RagLLMCache(CacheConfig()) as c:
            yield c


class TestMemoryAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self) -> AsyncIterator[BaseCache]:
        async with RagLLMCache(CacheConfig()) as c:
            yield c
