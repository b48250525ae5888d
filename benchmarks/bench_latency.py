"""Hit and store latency of each tier beside LangChain's own caches, in one process.

    python benchmarks/bench_latency.py

Baselines (measured in the same run, same payload): ``InMemoryCache`` for L1,
``langchain_community`` ``SQLiteCache`` for L2, ``RedisCache`` and a bare redis-py
``GET`` of the same bytes for L3.  Every figure is reported as a ratio.

Two levels are measured.  The core (``RagCache`` storing JSON) against a bare GET, and
against LangChain's caches with one plain ``Generation``; and the LangChain adapter
(``RagLLMCache``, which rebuilds message objects as LangChain's caches do) against the
same caches on a real serialized chat prompt and answer (``AIMessage`` with usage and
response metadata): the like-for-like replacement a user makes.  A chat model stores
an answer right after its lookup of the same prompt missed, so the chat store is timed
in that order (the lookup untimed, for both caches).

Every figure is the median of ``ROUNDS`` independent rounds, each taking the best of
short interleaved runs of the contenders.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations" / "langchain"))

from _common import fmt_us, interleaved, write

from rag_cache_plugin import CacheConfig, RagCache, RedisConfig

PROMPT = "What are the main differences between a Redis Cluster and Redis Sentinel?"
LLM_STRING = "model=gpt-4o-mini temperature=0.0 stop=None"
ROUNDS = 5
ANSWER = ("Redis Cluster shards the keyspace over several primaries, each with replicas, "
          "while Sentinel watches one primary and its replicas and promotes a replica "
          "when the primary fails. ") * 4


def _generations() -> tuple[list[Any], Any]:
    from langchain_core.outputs import Generation

    gens = [Generation(text=ANSWER, generation_info={"finish_reason": "stop"})]
    # The JSON the cache stores for the same generations (what RagLLMCache stores).
    return gens, [{"text": ANSWER, "generation_info": {"finish_reason": "stop"},
                   "type": "Generation"}]


def bench_l1(value: Any, gens: list[Any]) -> dict[str, float]:
    from langchain_core.caches import InMemoryCache

    base = InMemoryCache()
    base.update(PROMPT, LLM_STRING, gens)
    ours = RagCache(CacheConfig())
    ours.store(PROMPT, value, llm_string=LLM_STRING)
    best = interleaved({"ours": lambda: ours.lookup(PROMPT, llm_string=LLM_STRING),
                        "base": lambda: base.lookup(PROMPT, LLM_STRING)}, repeat=200,
                       run_seconds=0.0005)
    ours.close()
    return {"l1_hit": best["ours"], "inmemorycache_hit": best["base"],
            "l1_hit_ratio": best["ours"] / best["base"]}


def bench_l2(value: Any, gens: list[Any], tmp: Path) -> dict[str, float]:
    from langchain_community.cache import SQLiteCache

    base = SQLiteCache(database_path=str(tmp / "langchain.db"))
    base.update(PROMPT, LLM_STRING, gens)
    # No L1, so every lookup reads the SQLite file.
    ours = RagCache(CacheConfig(sqlite_path=tmp / "ours.db", l1_max_entries=0))
    ours.store(PROMPT, value, llm_string=LLM_STRING)
    hit = interleaved({"ours": lambda: ours.lookup(PROMPT, llm_string=LLM_STRING),
                       "base": lambda: base.lookup(PROMPT, LLM_STRING)})
    counter = iter(range(10**9))
    store = interleaved(
        {"ours": lambda: ours.store(f"{PROMPT} {next(counter)}", value, llm_string=LLM_STRING),
         "base": lambda: base.update(f"{PROMPT} {next(counter)}", LLM_STRING, gens)},
        run_seconds=0.02, repeat=15)
    ours.close()
    return {"l2_hit": hit["ours"], "sqlitecache_hit": hit["base"],
            "l2_hit_speedup": hit["base"] / hit["ours"],
            "l2_store": store["ours"], "sqlitecache_store": store["base"],
            "l2_store_speedup": store["base"] / store["ours"]}


def bench_l3(value: Any, gens: list[Any], url: str) -> dict[str, float]:
    import redis
    from langchain_community.cache import RedisCache

    client = redis.Redis.from_url(url)
    base = RedisCache(redis_=client)
    base.update(PROMPT, LLM_STRING, gens)
    # No L1 and no L2, so every lookup is a round trip to Redis.
    ours = RagCache(CacheConfig(redis=RedisConfig(url=url), l1_max_entries=0))
    ours.store(PROMPT, value, llm_string=LLM_STRING)
    name = ours.l3.data_key(ours.ref(PROMPT, llm_string=LLM_STRING))  # type: ignore[union-attr]
    raw = client.get(name)
    assert raw is not None
    client.set("bare-get", raw)
    best = interleaved({"bare": lambda: client.get("bare-get"),
                        "ours": lambda: ours.lookup(PROMPT, llm_string=LLM_STRING),
                        "base": lambda: base.lookup(PROMPT, LLM_STRING)})
    ours.close()
    client.close()
    return {"l3_hit": best["ours"], "bare_get": best["bare"], "rediscache_hit": best["base"],
            "l3_vs_bare_get": best["ours"] / best["bare"],
            "l3_speedup_vs_rediscache": best["base"] / best["ours"], "payload_bytes": len(raw)}


def bench_chat(tmp: Path, url: str) -> dict[str, float]:
    """RagLLMCache against SQLiteCache and RedisCache on one real chat prompt, no L1."""
    import redis
    from bench_adapter_latency import chat_prompt
    from langchain_community.cache import RedisCache, SQLiteCache
    from langchain_rag_cache import RagLLMCache

    prompt, llm_string, gens = chat_prompt()
    sqlite_base = SQLiteCache(database_path=str(tmp / "lc-chat.db"))
    client = redis.Redis.from_url(url)
    redis_base = RedisCache(redis_=client)
    l2 = RagLLMCache(CacheConfig(sqlite_path=tmp / "ours-chat.db", l1_max_entries=0))
    l3 = RagLLMCache(CacheConfig(redis=RedisConfig(url=url, prefix="chat"), l1_max_entries=0))
    for c in (sqlite_base, redis_base, l2, l3):
        c.update(prompt, llm_string, gens)
    assert l2.lookup(prompt, llm_string) and l3.lookup(prompt, llm_string)
    hit = interleaved({"l2": lambda: l2.lookup(prompt, llm_string),
                       "sqlite": lambda: sqlite_base.lookup(prompt, llm_string),
                       "l3": lambda: l3.lookup(prompt, llm_string),
                       "redis": lambda: redis_base.lookup(prompt, llm_string)})
    # Each store a new conversation (the last question numbered inside the serialized
    # messages, so the prompt stays a valid chat prompt), stored the way a chat model
    # stores it: right after its own lookup of the same prompt missed.  Both caches get
    # that lookup, untimed.
    last = prompt.rindex('"content": "') + len('"content": "')
    missed = {name: [f"{prompt[:last]}({name} {i}) {prompt[last:]}" for i in range(n)]
              for name, n in (("l2", 6000), ("sqlite", 400))}
    for name, cache in (("l2", l2), ("sqlite", sqlite_base)):
        for p in missed[name]:
            assert cache.lookup(p, llm_string) is None
    todo = {name: iter(ps) for name, ps in missed.items()}
    store = interleaved(
        {"l2": lambda: l2.update(next(todo["l2"]), llm_string, gens),
         "sqlite": lambda: sqlite_base.update(next(todo["sqlite"]), llm_string, gens)},
        run_seconds=0.02, repeat=15)
    for c in (l2, l3):
        c.close()
    client.close()
    return {"chat_l2_hit": hit["l2"], "chat_sqlitecache_hit": hit["sqlite"],
            "chat_l2_hit_speedup": hit["sqlite"] / hit["l2"],
            "chat_l2_store": store["l2"], "chat_sqlitecache_store": store["sqlite"],
            "chat_l2_store_speedup": store["sqlite"] / store["l2"],
            "chat_l3_hit": hit["l3"], "chat_rediscache_hit": hit["redis"],
            "chat_l3_speedup_vs_rediscache": hit["redis"] / hit["l3"]}


def main() -> dict[str, Any]:
    from rag_cache_plugin._localredis import LocalRedis

    gens, value = _generations()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as d, LocalRedis() as server:
        for k in range(ROUNDS):
            here = Path(d) / f"round{k}"
            here.mkdir()
            res: dict[str, Any] = {}
            res.update(bench_l1(value, gens))
            res.update(bench_l2(value, gens, here))
            res.update(bench_l3(value, gens, server.url))
            res.update(bench_chat(here, server.url))
            rounds.append(res)
    # Each figure (times and ratios alike) is the median over the rounds: one round's
    # best-of can catch a lucky or an unlucky moment of the machine, an fsync above all.
    res = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    res["rounds"] = ROUNDS
    for key in ("l2_store_speedup", "l3_speedup_vs_rediscache", "chat_l2_store_speedup",
                "chat_l3_speedup_vs_rediscache"):
        res[f"{key}_per_round"] = [round(r[key], 2) for r in rounds]
    from bench_adapter_latency import run as bench_adapter  # the LangChain adapter path

    adapter = bench_adapter()
    res.update({"adapter_l1_hit": adapter["rag_llm_cache_us"] / 1e6,
                "adapter_inmemorycache_hit": adapter["in_memory_cache_us"] / 1e6,
                "adapter_l1_ratio": adapter["ratio"]})
    checks = [  # (label, figure, limit, how the figure must compare)
        ("L1 hit vs InMemoryCache (ratio, target <= 10x)", res["l1_hit_ratio"], 10, "<="),
        ("L2 hit speed-up vs SQLiteCache (target >= 10x)", res["l2_hit_speedup"], 10, ">="),
        ("L2 store speed-up vs SQLiteCache (target >= 20x)", res["l2_store_speedup"], 20, ">="),
        ("L3 hit vs bare GET (ratio, target <= 1.3x)", res["l3_vs_bare_get"], 1.3, "<="),
        ("L3 hit speed-up vs RedisCache (target >= 1.5x)", res["l3_speedup_vs_rediscache"],
         1.5, ">="),
        ("chat: RagLLMCache L2 hit vs SQLiteCache (target >= 10x)",
         res["chat_l2_hit_speedup"], 10, ">="),
        ("chat: RagLLMCache L2 store, after its lookup missed, vs SQLiteCache (target >= 20x)",
         res["chat_l2_store_speedup"], 20, ">="),
        ("chat: RagLLMCache L3 hit vs RedisCache (target >= 1.5x)",
         res["chat_l3_speedup_vs_rediscache"], 1.5, ">="),
    ]
    targets = {label: (fig, fig <= lim if op == "<=" else fig >= lim)
               for label, fig, lim, op in checks}
    if "adapter_l1_ratio" in res:
        targets["RagLLMCache L1 hit vs InMemoryCache, chat prompt (target <= 10x)"] = (
            res["adapter_l1_ratio"], res["adapter_l1_ratio"] <= 10)
    rows = ["| measure | ours | baseline | figure | target met |", "|---|---|---|---|---|"]
    pairs = {
        "L1 hit vs InMemoryCache (ratio, target <= 10x)": ("l1_hit", "inmemorycache_hit"),
        "L2 hit speed-up vs SQLiteCache (target >= 10x)": ("l2_hit", "sqlitecache_hit"),
        "L2 store speed-up vs SQLiteCache (target >= 20x)": ("l2_store", "sqlitecache_store"),
        "L3 hit vs bare GET (ratio, target <= 1.3x)": ("l3_hit", "bare_get"),
        "L3 hit speed-up vs RedisCache (target >= 1.5x)": ("l3_hit", "rediscache_hit"),
        "RagLLMCache L1 hit vs InMemoryCache, chat prompt (target <= 10x)": (
            "adapter_l1_hit", "adapter_inmemorycache_hit"),
        "chat: RagLLMCache L2 hit vs SQLiteCache (target >= 10x)": (
            "chat_l2_hit", "chat_sqlitecache_hit"),
        "chat: RagLLMCache L2 store, after its lookup missed, vs SQLiteCache (target >= 20x)": (
            "chat_l2_store", "chat_sqlitecache_store"),
        "chat: RagLLMCache L3 hit vs RedisCache (target >= 1.5x)": (
            "chat_l3_hit", "chat_rediscache_hit"),
    }
    for label, (figure, ok) in targets.items():
        a, b = pairs[label]
        rows.append(f"| {label} | {fmt_us(res[a])} | {fmt_us(res[b])} | {figure:.2f}x | "
                    f"{'yes' if ok else 'NO'} |")
    table = "\n".join(rows) + (f"\n\nEach figure is the median of {ROUNDS} rounds (per-round "
                               "store and RedisCache speed-ups are in latency.json).")
    print(table)
    write("latency", {"results": res, "targets_met": {k: v[1] for k, v in targets.items()}}, table)
    return res


if __name__ == "__main__":
    main()
