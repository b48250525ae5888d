"""Nodes and responses to JSON data and back.

Nodes go through LlamaIndex's own docstore helpers (``doc_to_json`` /
``json_to_doc``), which keep the node class, ids, metadata, relationships and
embedding; ``NodeWithScore.from_dict`` is avoided because it cannot rebuild the
abstract ``node`` field on llama-index-core 0.14.  Every payload carries a format
tag so a future layout change is a miss, never a wrong object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from llama_index.core.base.response.schema import Response
from llama_index.core.schema import NodeWithScore
from llama_index.core.storage.docstore.utils import doc_to_json, json_to_doc

__all__ = [
    "FORMAT_NODES",
    "FORMAT_RESPONSE",
    "PayloadError",
    "decode_nodes",
    "decode_response",
    "encode_nodes",
    "encode_response",
    "source_tags",
]

FORMAT_NODES = "llama_index/nodes@1"
FORMAT_RESPONSE = "llama_index/response@1"


class PayloadError(ValueError):
    """A cached value is not a payload this version can rebuild (treated as a miss)."""


def _nodes_to_json(nodes: Sequence[NodeWithScore]) -> list[dict[str, Any]]:
    return [{"node": doc_to_json(n.node), "score": n.score} for n in nodes]


def _nodes_from_json(data: Any) -> list[NodeWithScore]:
    if not isinstance(data, list):
        raise PayloadError("nodes must be a list")
    return [NodeWithScore(node=json_to_doc(d["node"]), score=d["score"]) for d in data]


def _fresh(value: Any) -> Any:
    # L1 hands the same JSON object to every caller, and pydantic keeps references
    # to nested dicts (metadata), so rebuild from a private copy.
    return json.loads(json.dumps(value))


def encode_nodes(nodes: Sequence[NodeWithScore]) -> dict[str, Any]:
    """A retrieval result as JSON data."""
    return {"format": FORMAT_NODES, "nodes": _nodes_to_json(nodes)}


def decode_nodes(value: Any) -> list[NodeWithScore]:
    """Rebuild a retrieval result; ``PayloadError`` if ``value`` is not one."""
    if not isinstance(value, dict) or value.get("format") != FORMAT_NODES:
        raise PayloadError("not a cached retrieval")
    try:
        return _nodes_from_json(_fresh(value["nodes"]))
    except PayloadError:
        raise
    except Exception as exc:  # any malformed payload is a miss, not a crash
        raise PayloadError(f"cannot rebuild nodes: {exc}") from exc


def encode_response(
    text: str | None,
    source_nodes: Sequence[NodeWithScore],
    metadata: dict[str, Any] | None,
    chunks: list[str] | None = None,
) -> dict[str, Any]:
    """An answer as JSON data; ``chunks`` keeps the pieces of a streamed answer."""
    out: dict[str, Any] = {
        "format": FORMAT_RESPONSE,
        "source_nodes": _nodes_to_json(source_nodes),
        "metadata": metadata,
    }
    if chunks is None:
        out["response"] = text
    else:
        out["chunks"] = chunks
    return out


def decode_response(value: Any) -> tuple[Response, list[str] | None]:
    """Rebuild an answer; the second item is the chunks of a streamed answer (or None)."""
    if not isinstance(value, dict) or value.get("format") != FORMAT_RESPONSE:
        raise PayloadError("not a cached response")
    try:
        data = _fresh(value)
        chunks = data.get("chunks")
        if chunks is not None and not all(isinstance(c, str) for c in chunks):
            raise PayloadError("chunks must be strings")
        text = "".join(chunks) if chunks is not None else data["response"]
        response = Response(text, _nodes_from_json(data["source_nodes"]), data["metadata"])
    except PayloadError:
        raise
    except Exception as exc:
        raise PayloadError(f"cannot rebuild response: {exc}") from exc
    return response, chunks


def source_tags(nodes: Iterable[NodeWithScore]) -> list[str]:
    """Invalidation tags of a result: the ref_doc_id and the id of every node in it."""
    tags: dict[str, None] = {}  # ordered set: stable tags make stable entries
    for n in nodes:
        ref = n.node.ref_doc_id
        if ref:
            tags[ref] = None
        tags[n.node.node_id] = None
    return list(tags)
