"""Stable identities of retrievers and query engines.

A cache entry must be shared by every process that runs the same retriever or
engine, and by nothing else.  Python's ``id()`` fails the first; the class name
alone fails the second (two ``top_k`` settings give different answers).  So the
identity is a fingerprint of the wrapped object's configuration: its class, the
ids of the indexes it reads, and its settings, model parameters and prompt
texts, found by walking its attributes.  State (stores, callback managers) and
secrets (API keys) are left out; so is anything that is not plain data, which
would not be stable across processes.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import types
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.callbacks.base import CallbackManager
from llama_index.core.indices.base import BaseIndex
from llama_index.core.storage.docstore.types import BaseDocumentStore
from llama_index.core.storage.storage_context import StorageContext
from llama_index.core.vector_stores.types import BasePydanticVectorStore
from pydantic import BaseModel

__all__ = ["Identity", "identify", "index_tag"]

_MAX_DEPTH = 8
# Attributes that hold state or plumbing, not configuration.
_SKIP_NAMES = frozenset({
    "callback_manager", "_callback_manager", "_vector_store", "_docstore", "_storage_context",
    "_index_struct", "object_map", "_object_map", "_verbose", "verbose", "_program_factory",
    "_kwargs_cache",
    # Derived from the template text (which is kept), in set order: unstable.
    "template_vars",
})
_SKIP_TYPES: tuple[type, ...] = (
    CallbackManager, BaseDocumentStore, BasePydanticVectorStore, StorageContext,
)
# Never let credentials into a key derivation ("max_tokens" is configuration, kept).
_SECRET = re.compile(r"(api_?key|secret|passw|credential|auth|(^|_)token$|(^|_)key$)", re.I)


def index_tag(index: BaseIndex[Any] | str) -> str:
    """The tag every cached result read from ``index`` carries (for whole-index drops)."""
    index_id = index if isinstance(index, str) else index.index_id
    return f"llama_index:index:{index_id}"


@dataclass(frozen=True, slots=True)
class Identity:
    """What partitions a wrapped object's entries."""

    cache_id: str
    """The given or derived id (class, index ids, configuration digest)."""
    context: str
    """The partition context handed to the cache."""
    llm_string: str
    """The model settings (the LLM of an engine, the embedding model of a retriever)."""
    index_ids: tuple[str, ...]


def _qualname(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


class _Walker:
    """Turns an object graph into JSON data describing its configuration."""

    def __init__(self) -> None:
        self.index_ids: list[str] = []
        self.llm: BaseLLM | None = None
        self.embed_model: BaseEmbedding | None = None
        self._seen: set[int] = set()

    def walk(self, value: Any, depth: int = 0) -> Any:
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, enum.Enum):
            return self.walk(value.value, depth)
        if isinstance(value, BaseIndex):
            if value.index_id not in self.index_ids:
                self.index_ids.append(value.index_id)
            return {"index": value.index_id}
        if isinstance(value, (*_SKIP_TYPES, types.MethodType)):
            return None
        if isinstance(value, types.FunctionType | type):
            return _qualname(value) + ("" if isinstance(value, type) else "." + value.__name__)
        if depth >= _MAX_DEPTH or id(value) in self._seen:
            return _qualname(value)
        self._seen.add(id(value))
        try:
            return self._walk_container(value, depth)
        finally:
            self._seen.discard(id(value))

    def _walk_container(self, value: Any, depth: int) -> Any:
        if isinstance(value, list | tuple):
            return [self.walk(v, depth + 1) for v in value]
        if isinstance(value, set | frozenset):
            return sorted((self.walk(v, depth + 1) for v in value), key=repr)
        if isinstance(value, dict):
            return {str(k): self.walk(v, depth + 1)
                    for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
        if isinstance(value, BaseLLM) and self.llm is None:
            self.llm = value
        if isinstance(value, BaseEmbedding) and self.embed_model is None:
            self.embed_model = value
        if isinstance(value, BaseModel):
            fields = {n: getattr(value, n, None) for n, f in type(value).model_fields.items()
                      if not f.exclude}
        elif hasattr(value, "__dict__"):
            fields = dict(vars(value))
        else:
            return _qualname(value)
        out: dict[str, Any] = {"class": _qualname(value)}
        for name in sorted(fields):
            if name in _SKIP_NAMES or name.startswith("__") or _SECRET.search(name):
                continue
            out[name] = self.walk(_normalized(value, name, fields[name]), depth + 1)
        return out


def _normalized(owner: Any, name: str, value: Any) -> Any:
    # ``as_retriever()`` pins the index's node ids at creation time; "all of them"
    # means "no restriction", and must not change the identity as documents change.
    if name == "_node_ids" and value is not None:
        index = getattr(owner, "_index", None)
        struct = getattr(index, "index_struct", None)
        nodes = getattr(struct, "nodes_dict", None)
        if isinstance(nodes, dict) and set(value) == set(nodes.values()):
            return None
    return value


def _describe_model(model: Any) -> str:
    if model is None:
        return ""
    return json.dumps(_Walker().walk(model), sort_keys=True, separators=(",", ":"))


def identify(obj: Any, kind: str, cache_id: str | None = None) -> Identity:
    """The identity of ``obj`` (a retriever or query engine); ``cache_id`` overrides
    the derived fingerprint (the model settings still partition)."""
    walker = _Walker()
    described = walker.walk(obj)
    model: Any = walker.llm if kind == "query" else walker.embed_model
    if cache_id is None:
        text = json.dumps(described, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
        indexes = ",".join(walker.index_ids) or "-"
        cache_id = f"{type(obj).__name__}:{indexes}:{digest}"
    return Identity(cache_id, f"llama_index:{kind}:{cache_id}", _describe_model(model),
                    tuple(walker.index_ids))
