"""The demo application: Brightwell Home's support assistant.

A LlamaIndex ``VectorStoreIndex`` over the help-centre articles in ``docs/`` (MiniLM
embeddings), its retriever wrapped in ``CachedRetriever``, and a LangChain chain on
top (retrieve -> prompt -> chat model -> parser) whose model calls go through
``set_llm_cache(RagLLMCache(...))``.

Answers and retrievals live in two ``RagCache`` objects over the same SQLite file
(and Redis, when asked), both with semantic matching on the same model.  Two,
because analytics counts the lookups of one cache: the answer cache's figures are
then about answers only (a question asked once is not "missed twice"), while
retrievals are counted from the LlamaIndex events.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache, set_llm_cache
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnableParallel
from langchain_core.runnables import RunnablePassthrough as Passthrough
from langchain_rag_cache import MARK, RagLLMCache
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.schema import MetadataMode, NodeWithScore
from llama_index_rag_cache import CachedRetriever

from .. import CacheConfig, RagCache, RedisConfig, SemanticConfig
from .embedding import MiniLMEmbedding
from .model import LocalChatModel

__all__ = ["ANSWERS", "RETRIEVALS", "Answer", "DemoApp", "load_documents"]

ANSWERS = "answers"
RETRIEVALS = "retrievals"
REDIS_PREFIX = "ragcdemo"
"""Key prefix of the demo's entries in Redis, apart from any real cache's."""

SYSTEM = ("You are the support assistant of Brightwell Home. Answer only from the "
          "help-centre articles below.\n\n{context}")
PROMPT = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    cache: dict[str, Any] | None
    """The cache's mark: {"tier", "kind", "score"} when the answer came from the cache."""
    tokens: tuple[int, int] = (0, 0)
    """(input, output) tokens of the model call that produced the answer (a cached
    answer carries its producer's usage)."""

    @property
    def cached(self) -> bool:
        return self.cache is not None


def load_documents() -> list[Document]:
    """The help-centre articles shipped with the package, one ``Document`` each."""
    out = []
    for path in sorted(files(__package__).joinpath("docs").iterdir(), key=lambda p: p.name):
        if not path.name.endswith(".md"):
            continue
        heading, _, body = path.read_text(encoding="utf-8").partition("\n")
        doc_id = path.name.removesuffix(".md")
        out.append(Document(text=body.strip(), id_=doc_id,
                            metadata={"title": heading.lstrip("# ").strip()}))
    return out


def format_nodes(nodes: list[NodeWithScore]) -> str:
    """The retrieved articles as the prompt shows them (no scores: the same
    articles give the same prompt, so the same cache partition)."""
    return "\n\n".join(f"[{n.node.metadata.get('title', '')}]\n"
                       f"{n.node.get_content(metadata_mode=MetadataMode.NONE)}" for n in nodes)


def _mark(message: AIMessage) -> dict[str, Any] | None:
    mark = message.response_metadata.get(MARK)
    return dict(mark) if isinstance(mark, dict) else None


def _tokens(message: AIMessage) -> tuple[int, int]:
    usage = message.usage_metadata
    if usage is None:
        return 0, 0
    return int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))


class DemoApp:
    """Build with the cache files in ``workdir``; ``ask(question)``; ``close()``."""

    def __init__(self, workdir: Path, *, redis_url: str | None = None,
                 latency_scale: float = 0.25, l1_max_entries: int = 32,
                 top_k: int = 3, semantic_setting: Literal["strict", "balanced"] = "strict",
                 ) -> None:
        self.embedding = MiniLMEmbedding()
        redis = RedisConfig(url=redis_url, prefix=REDIS_PREFIX) if redis_url else None

        def cache(namespace: str, **options: Any) -> RagCache:
            return RagCache(CacheConfig(
                namespace=namespace, sqlite_path=workdir / "cache.db", redis=redis,
                semantic=SemanticConfig(embedder=self.embedding, setting=semantic_setting),
                **options))

        self.cache = cache(ANSWERS, l1_max_entries=l1_max_entries)
        self.retrieval_cache = cache(RETRIEVALS)
        if redis is not None:  # a cold start, whatever earlier runs left in Redis
            self.clear()
        self.llm_cache = RagLLMCache(self.cache, namespace=ANSWERS)
        self._previous: BaseCache | None = get_llm_cache()
        set_llm_cache(self.llm_cache)
        self.documents = load_documents()
        self.index = VectorStoreIndex.from_documents(self.documents, embed_model=self.embedding)
        # A stable id: every process (and the next run) derives the same cache identity.
        self.index.set_index_id("brightwell-help-centre")
        self.retriever = CachedRetriever(self.index.as_retriever(similarity_top_k=top_k),
                                         self.retrieval_cache)
        self.model = LocalChatModel(latency_scale=latency_scale)
        self.chain = self.build_chain()

    def build_chain(self) -> Runnable[dict[str, str], dict[str, Any]]:
        def retrieve(question: str) -> str:
            return format_nodes(self.retriever.retrieve(question))

        return (Passthrough.assign(context=itemgetter("question") | RunnableLambda(retrieve))
                | PROMPT | self.model
                | RunnableParallel(text=StrOutputParser(), cache=RunnableLambda(_mark),
                                   tokens=RunnableLambda(_tokens)))

    def ask(self, question: str, config: dict[str, Any] | None = None) -> Answer:
        out = self.chain.invoke({"question": question}, config=config)  # type: ignore[arg-type]
        return Answer(out["text"], out["cache"], out["tokens"])

    def clear(self) -> None:
        self.cache.clear()
        self.retrieval_cache.clear()

    def close(self, *, clear_redis: bool = True) -> None:
        """Restore the previous global LLM cache; remove the demo's Redis entries."""
        set_llm_cache(self._previous)
        if clear_redis and self.cache.l3 is not None:
            self.clear()
        self.cache.close()
        self.retrieval_cache.close()
