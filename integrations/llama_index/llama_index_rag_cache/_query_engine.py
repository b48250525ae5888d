"""``CachedQueryEngine``: any query engine, with its answers in the three tiers."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.prompts.mixin import PromptDictType, PromptMixinType
from llama_index.core.schema import NodeWithScore, QueryBundle

from rag_cache_plugin import CacheHit, RagCache

from ._binding import Binding
from ._identity import identify
from ._serde import PayloadError, decode_response, encode_response, source_tags

__all__ = ["CachedQueryEngine"]

_Encoded = Callable[[], tuple[Any, Sequence[str]]]


def _replay(chunks: list[str]) -> Generator[str, None, None]:
    yield from chunks


async def _areplay(chunks: list[str]) -> AsyncGenerator[str, None]:
    for chunk in chunks:
        yield chunk


def _recording(gen: Generator[str, None, None] | Any,
               done: Callable[[list[str]], None]) -> Generator[str, None, None]:
    # Stored only once the stream is consumed to its end: an abandoned or failed
    # stream never becomes a truncated cached answer.
    chunks: list[str] = []
    for chunk in gen:
        chunks.append(chunk)
        yield chunk
    done(chunks)


async def _arecording(gen: AsyncGenerator[str, None],
                      done: Callable[[list[str]], Awaitable[None]]) -> AsyncGenerator[str, None]:
    chunks: list[str] = []
    async for chunk in gen:
        chunks.append(chunk)
        yield chunk
    await done(chunks)


class CachedQueryEngine(BaseQueryEngine):
    """Wraps ``query_engine``; a repeated (or, with semantic matching, paraphrased)
    query returns the cached ``Response`` (answer, source nodes, metadata) without
    retrieving or calling the LLM.  A streamed answer is cached once the stream has
    been consumed and is replayed as a stream.

    ``cache_id`` (derived from the engine's class, index ids and settings when not
    given) and the LLM's settings partition the entries; each entry is tagged with
    its source nodes' ``ref_doc_id`` and node ids.  ``PydanticResponse`` answers
    (structured output) pass through uncached.
    """

    def __init__(self, query_engine: BaseQueryEngine, cache: RagCache, *,
                 cache_id: str | None = None, namespace: str | None = None,
                 ttl: float | None = None,
                 callback_manager: CallbackManager | None = None) -> None:
        if not isinstance(query_engine, BaseQueryEngine):
            raise TypeError("query_engine must be a BaseQueryEngine, "
                            f"not {type(query_engine).__name__}")
        self._engine = query_engine
        self._cache_id = cache_id
        self._binding = Binding(cache, identify(query_engine, "query", cache_id), "query",
                                namespace=namespace, ttl=ttl)
        super().__init__(callback_manager=callback_manager or query_engine.callback_manager)

    @property
    def query_engine(self) -> BaseQueryEngine:
        """The wrapped query engine."""
        return self._engine

    @property
    def cache(self) -> RagCache:
        return self._binding.cache

    @property
    def cache_id(self) -> str:
        """The identity whose entries this wrapper shares with other processes."""
        return self._binding.identity.cache_id

    # -- prompts: pass through, and re-derive the identity when they change ----------

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"query_engine": self._engine}

    def update_prompts(self, prompts_dict: PromptDictType) -> None:
        super().update_prompts(prompts_dict)
        b = self._binding
        self._binding = Binding(b.cache, identify(self._engine, "query", self._cache_id),
                                "query", namespace=b.namespace, ttl=b.ttl)

    # -- pass-throughs -----------------------------------------------------------------

    def retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._engine.retrieve(query_bundle)

    def synthesize(self, query_bundle: QueryBundle, nodes: list[NodeWithScore],
                   additional_source_nodes: Sequence[NodeWithScore] | None = None,
                   ) -> RESPONSE_TYPE:
        return self._engine.synthesize(query_bundle, nodes, additional_source_nodes)

    async def asynthesize(self, query_bundle: QueryBundle, nodes: list[NodeWithScore],
                          additional_source_nodes: Sequence[NodeWithScore] | None = None,
                          ) -> RESPONSE_TYPE:
        return await self._engine.asynthesize(query_bundle, nodes, additional_source_nodes)

    # -- caching -----------------------------------------------------------------------

    def _from_hit(self, bundle: QueryBundle, hit: CacheHit | None,
                  asynchronous: bool) -> RESPONSE_TYPE | None:
        if hit is None:
            return None
        try:
            response, chunks = decode_response(hit.value)
        except PayloadError:
            return None
        self._binding.note(bundle, hit)
        if chunks is None:
            return response
        if asynchronous:
            return AsyncStreamingResponse(_areplay(chunks), response.source_nodes,
                                          response.metadata)
        return StreamingResponse(_replay(chunks), response.source_nodes, response.metadata)

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        b = self._binding
        cached = self._from_hit(query_bundle, b.lookup(query_bundle), asynchronous=False)
        if cached is not None:
            return cached
        response = self._engine.query(query_bundle)
        if isinstance(response, Response):
            b.store(query_bundle, _encoder(response))
        else:
            self._record_stream(query_bundle, response)
        b.note(query_bundle, None)
        return response

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        b = self._binding
        cached = self._from_hit(query_bundle, await b.alookup(query_bundle), asynchronous=True)
        if cached is not None:
            return cached
        response = await self._engine.aquery(query_bundle)
        if isinstance(response, Response):
            await b.astore(query_bundle, _encoder(response))
        else:
            self._record_stream(query_bundle, response)
        b.note(query_bundle, None)
        return response

    def _record_stream(self, bundle: QueryBundle, response: RESPONSE_TYPE) -> None:
        """Make a streamed answer store itself once consumed (in place)."""
        b = self._binding
        if isinstance(response, StreamingResponse | AsyncStreamingResponse) \
                and response.response_txt is not None:
            b.store(bundle, _encoder(response, [response.response_txt]))  # already consumed
        elif isinstance(response, StreamingResponse) and response.response_gen is not None:
            response.response_gen = _recording(
                response.response_gen,
                lambda chunks: b.store(bundle, _encoder(response, chunks)))
        elif isinstance(response, AsyncStreamingResponse) and response.response_gen is not None:
            async def done(chunks: list[str]) -> None:
                await b.astore(bundle, _encoder(response, chunks))

            response.response_gen = _arecording(response.response_gen, done)
        # PydanticResponse: its model class cannot be rebuilt safely; not cached.


def _encoder(response: Any, chunks: list[str] | None = None) -> _Encoded:
    def encode() -> tuple[Any, Sequence[str]]:
        nodes = list(response.source_nodes)
        text = None if chunks is not None else response.response
        return (encode_response(text, nodes, response.metadata, chunks), source_tags(nodes))
    return encode
