"""Automatic invalidation when documents change.

``watch_documents`` hooks the calls through which LlamaIndex changes documents:
an index's ``delete_ref_doc`` / ``update_ref_doc`` / ``refresh_ref_docs`` /
``delete_nodes`` (and their async twins) and an ``IngestionPipeline``'s runs,
whose upserts delete changed documents from its docstore.  The ids touched are
collected and invalidated once, when the outermost hooked call returns, so a
document's old entries are dropped after its new nodes are in place.

Entries are only tagged with what they were built from, so a *new* document does
not invalidate anything by default, although it may now be the best answer to
a cached question; ``on_insert="invalidate_index"`` drops every entry read from
the index whenever documents are inserted (or re-inserted by an update).
A query that races with a change may still cache a result computed before it;
bound that window with the wrappers' ``ttl``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, Literal

from llama_index.core.indices.base import BaseIndex

from rag_cache_plugin import RagCache

from ._identity import index_tag

__all__ = ["DocumentWatch", "watch_documents"]

_log = logging.getLogger("llama_index_rag_cache")

OnInsert = Literal["keep", "invalidate_index"]
_Ids = Callable[[tuple[Any, ...], dict[str, Any], Any], Iterable[str]]


def _arg(name: str, pos: int = 0) -> _Ids:
    """Ids from one argument (a string id, a list of ids, or a document)."""
    def ids(args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> Iterable[str]:
        value = kwargs.get(name, args[pos] if len(args) > pos else None)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if hasattr(value, "id_"):
            return (value.id_,)
        return [v for v in value if isinstance(v, str)]
    return ids


def _always(tag: str) -> _Ids:
    def ids(args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> Iterable[str]:
        return (tag,)
    return ids


def _if_output(tag: str) -> _Ids:
    """``tag`` when a pipeline run produced nodes (something was ingested)."""
    def ids(args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> Iterable[str]:
        return (tag,) if result else ()
    return ids


def _nothing(args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> Iterable[str]:
    return ()


class DocumentWatch:
    """The hooks ``watch_documents`` installed; ``close()`` removes them."""

    def __init__(self, cache: RagCache, namespace: str | None) -> None:
        self.cache = cache
        self.namespace = namespace
        self._pending: ContextVar[set[str] | None] = ContextVar(
            f"rag_cache_pending_{id(self)}", default=None)
        self._patched: list[tuple[Any, str, bool, Any]] = []

    # -- hooking -------------------------------------------------------------------

    def _hook(self, obj: Any, name: str, ids: _Ids) -> None:
        original = getattr(obj, name, None)
        if original is None:
            return
        own = vars(obj).get(name, _MISSING)
        wrapped = (self._async_wrapper(original, ids) if inspect.iscoroutinefunction(original)
                   else self._sync_wrapper(original, ids))
        # object.__setattr__: pydantic models (IngestionPipeline) refuse unknown fields.
        object.__setattr__(obj, name, wrapped)
        self._patched.append((obj, name, own is not _MISSING, own))

    def _sync_wrapper(self, original: Callable[..., Any], ids: _Ids) -> Callable[..., Any]:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = self._pending.set(set()) if self._pending.get() is None else None
            try:
                result = original(*args, **kwargs)
                self._collect(ids(args, kwargs, result))
                return result
            finally:
                if token is not None:
                    touched = self._pending.get() or set()
                    self._pending.reset(token)
                    self._flush(touched)
        return wrapper

    def _async_wrapper(self, original: Callable[..., Any], ids: _Ids) -> Callable[..., Any]:
        @functools.wraps(original)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = self._pending.set(set()) if self._pending.get() is None else None
            try:
                result = await original(*args, **kwargs)
                self._collect(ids(args, kwargs, result))
                return result
            finally:
                if token is not None:
                    touched = self._pending.get() or set()
                    self._pending.reset(token)
                    await self._aflush(touched)
        return wrapper

    def _collect(self, ids: Iterable[str]) -> None:
        pending = self._pending.get()
        if pending is not None:
            pending.update(ids)

    def _flush(self, ids: set[str]) -> None:
        if ids:
            try:
                self.cache.invalidate(tags=sorted(ids), namespace=self.namespace)
            except Exception:
                _log.warning("rag-cache: invalidation of %d ids failed", len(ids), exc_info=True)

    async def _aflush(self, ids: set[str]) -> None:
        if ids:
            try:
                await self.cache.ainvalidate(tags=sorted(ids), namespace=self.namespace)
            except Exception:
                _log.warning("rag-cache: invalidation of %d ids failed", len(ids), exc_info=True)

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Remove the hooks (newest first, so stacked watches unwind cleanly)."""
        while self._patched:
            obj, name, had_own, own = self._patched.pop()
            if had_own:
                object.__setattr__(obj, name, own)
            else:
                object.__delattr__(obj, name)

    def __enter__(self) -> DocumentWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_MISSING = object()


def watch_documents(cache: RagCache, *, index: BaseIndex[Any] | None = None,
                    pipeline: Any = None, namespace: str | None = None,
                    on_insert: OnInsert = "keep") -> DocumentWatch:
    """Invalidate, in every tier and process, the cached results built from documents
    that ``index`` or ``pipeline`` (an ``IngestionPipeline`` with a docstore) change.

    Use the ``namespace`` the wrappers use.  Returns a ``DocumentWatch``; ``close()``
    (or leaving its ``with`` block) removes the hooks.
    """
    if index is None and pipeline is None:
        raise ValueError("watch_documents needs an index, a pipeline, or both")
    if on_insert not in ("keep", "invalidate_index"):
        raise ValueError("on_insert must be 'keep' or 'invalidate_index'")
    if on_insert == "invalidate_index" and index is None:
        raise ValueError("on_insert='invalidate_index' needs the index")
    watch = DocumentWatch(cache, namespace)
    if index is not None:
        for name in ("delete_ref_doc", "adelete_ref_doc"):
            watch._hook(index, name, _arg("ref_doc_id"))
        for name in ("update_ref_doc", "aupdate_ref_doc"):
            watch._hook(index, name, _arg("document"))
        for name in ("delete_nodes", "adelete_nodes"):
            watch._hook(index, name, _arg("node_ids"))
        for name in ("refresh_ref_docs", "arefresh_ref_docs"):
            watch._hook(index, name, _nothing)  # the updates inside report their ids
        if on_insert == "invalidate_index":
            for name in ("insert", "ainsert", "insert_nodes", "ainsert_nodes"):
                watch._hook(index, name, _always(index_tag(index)))
    if pipeline is not None:
        docstore = getattr(pipeline, "docstore", None)
        if docstore is None:
            raise ValueError("the pipeline needs a docstore to tell changed documents")
        for name in ("delete_ref_doc", "adelete_ref_doc"):
            watch._hook(docstore, name, _arg("ref_doc_id"))
        for name in ("delete_document", "adelete_document"):
            watch._hook(docstore, name, _arg("doc_id"))
        ran: _Ids = _nothing
        if on_insert == "invalidate_index" and index is not None:
            ran = _if_output(index_tag(index))
        for name in ("run", "arun"):
            watch._hook(pipeline, name, ran)
    return watch
