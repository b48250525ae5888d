"""A separate process using the cache: ``python li_worker.py '<plan json>'``.

Builds the test index (cheap hash embeddings, so a process starts in seconds),
wraps its query engine, runs the plan's steps and prints one JSON line per step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from li_support import HashEmbedding, ScriptedLLM, documents
from llama_index.core import VectorStoreIndex
from llama_index_rag_cache import CachedQueryEngine, watch_documents

from rag_cache_plugin import CacheConfig, Hit, Miss, RagCache, RedisConfig


def make_cache(plan: dict[str, Any]) -> RagCache:
    redis = RedisConfig(url=plan["redis"], timeout=2.0) if plan.get("redis") else None
    sqlite = Path(plan["sqlite"]) if plan.get("sqlite") else None
    return RagCache(CacheConfig(sqlite_path=sqlite, redis=redis, news_poll_interval=0.05))


def make_engine(cache: RagCache, llm: ScriptedLLM, changes: dict[str, str] | None = None,
                ) -> tuple[VectorStoreIndex, CachedQueryEngine]:
    index = VectorStoreIndex.from_documents(documents(**(changes or {})),
                                            embed_model=HashEmbedding())
    index.set_index_id("capitals")
    return index, CachedQueryEngine(index.as_query_engine(llm=llm, similarity_top_k=1), cache)


def main() -> None:
    plan = json.loads(sys.argv[1])
    llm = ScriptedLLM()
    with make_cache(plan) as cache:
        last: list[Any] = []
        cache.bus.subscribe(last.append, (Hit, Miss))
        index, engine = make_engine(cache, llm)
        print(json.dumps({"cache_id": engine.cache_id}), flush=True)
        for step in plan["steps"]:
            if "query" in step:
                last.clear()
                calls = llm.calls
                answer = str(engine.query(step["query"]))
                event = last[0] if last else None
                print(json.dumps({
                    "query": step["query"], "answer": answer, "llm_calls": llm.calls - calls,
                    "tier": event.tier if isinstance(event, Hit) else None}), flush=True)
            elif "refresh" in step:
                with watch_documents(cache, index=index):
                    index.refresh_ref_docs(documents(**step["refresh"]))
                _, engine = make_engine(cache, llm, step["refresh"])
                print(json.dumps({"refreshed": sorted(step["refresh"])}), flush=True)


if __name__ == "__main__":
    main()
