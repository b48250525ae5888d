"""Generations <-> the core's JSON values, through an allow-list of classes.

Stored form (version 1)::

    {"v": 1, "g": [{"t": "g" | "gc" | "cg" | "cgc", "text": ..., "info": {...} | null,
                    "m": {"t": "ai" | "aic", "content": ..., "ak": {...}, "rm": {...},
                          "name": ..., "tc": [...], "itc": [...], "um": {...} | null,
                          "tcc": [...], "cp": null | "last"}}]}

Nothing is revived by class path: the kind tags map to six known classes, every field
is type-checked, and a LangChain constructor marker anywhere in the payload makes it
invalid.  Decoded entries become validated templates; every hit gets fresh copies of
them (containers included) so a caller mutating its result never touches the cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    Generation,
    GenerationChunk,
)
from pydantic import BaseModel, ValidationError

__all__ = ["MARK", "BadPayload", "Template", "Unsupported", "decode", "encode"]

MARK = "rag_cache"
"""Key of the cache mark in ``response_metadata`` / ``generation_info``."""

_VERSION = 1
_GEN_KINDS: dict[type[Generation], str] = {
    Generation: "g", GenerationChunk: "gc", ChatGeneration: "cg", ChatGenerationChunk: "cgc",
}
_GEN_CLASSES = {v: k for k, v in _GEN_KINDS.items()}
_MSG_KINDS: dict[type[AIMessage], str] = {AIMessage: "ai", AIMessageChunk: "aic"}
_MSG_CLASSES = {v: k for k, v in _MSG_KINDS.items()}
# Fields each class may carry; anything else set on an object means we cannot store it
# faithfully (a newer langchain-core field), so it is not cached.
_GEN_FIELDS = frozenset({"text", "generation_info", "type", "message"})
_MSG_FIELDS = frozenset({"content", "additional_kwargs", "response_metadata", "type", "name",
                         "id", "tool_calls", "invalid_tool_calls", "usage_metadata",
                         "tool_call_chunks", "chunk_position"})
_GEN_KEYS = {"g": {"t", "text", "info"}, "gc": {"t", "text", "info"},
             "cg": {"t", "info", "m"}, "cgc": {"t", "info", "m"}}
_MSG_KEYS = {"ai": {"t", "content", "ak", "rm", "name", "tc", "itc", "um"},
             "aic": {"t", "content", "ak", "rm", "name", "tc", "itc", "um", "tcc", "cp"}}
_LC_TYPES = frozenset({"constructor", "secret", "not_implemented"})


class Unsupported(ValueError):
    """A generation that cannot be stored faithfully (it is not cached)."""


class BadPayload(ValueError):
    """A stored value that is not a valid version-1 payload (treated as corrupt)."""


# -- encoding -------------------------------------------------------------------------


def _is_lc_marker(d: Mapping[Any, Any]) -> bool:
    return d.get("lc") == 1 and d.get("type") in _LC_TYPES


def _json(value: Any, depth: int = 0) -> Any:
    """A JSON-data copy of ``value``; pydantic models (structured output) become dicts."""
    if depth > 64:
        raise Unsupported("nested too deeply")
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dict):
        if _is_lc_marker(value):
            raise Unsupported("LangChain constructor marker in a generation")
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise Unsupported(f"non-string key {k!r}")
            out[k] = _json(v, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [_json(v, depth + 1) for v in value]
    if isinstance(value, BaseModel):
        return _json(value.model_dump(mode="json"), depth + 1)
    raise Unsupported(f"{type(value).__name__} is not JSON data")


def _unmarked(d: dict[str, Any] | None) -> dict[str, Any] | None:
    """Drop our own mark: a cached answer stored again must not carry a stale one."""
    if d and MARK in d:
        return {k: v for k, v in d.items() if k != MARK}
    return d


def _check_fields(obj: BaseModel, allowed: frozenset[str]) -> None:
    extra = obj.model_fields_set - allowed
    if extra or obj.__pydantic_extra__:
        raise Unsupported(f"{type(obj).__name__} carries unknown fields")


def _encode_message(m: Any) -> dict[str, Any]:
    kind = _MSG_KINDS.get(type(m))
    if kind is None:
        raise Unsupported(f"{type(m).__name__} messages are not cached")
    _check_fields(m, _MSG_FIELDS)
    doc: dict[str, Any] = {
        "t": kind,
        "content": _json(m.content),
        "ak": _json(m.additional_kwargs),
        "rm": _json(_unmarked(m.response_metadata)),
        "name": m.name,
        "tc": _json(m.tool_calls),
        "itc": _json(m.invalid_tool_calls),
        "um": _json(m.usage_metadata),
    }
    # The message id is not kept: every hit returning the same id would make
    # id-keyed histories (LangGraph's add_messages) replace one answer with another.
    if kind == "aic":
        doc["tcc"] = _json(m.tool_call_chunks)
        doc["cp"] = m.chunk_position
    return doc


def encode(generations: Sequence[Generation]) -> dict[str, Any]:
    """The JSON value stored for ``generations``; raises ``Unsupported``."""
    if not isinstance(generations, Sequence) or isinstance(generations, str):
        raise Unsupported("generations must be a list")
    if not generations:
        raise Unsupported("no generations")
    out: list[dict[str, Any]] = []
    for g in generations:
        kind = _GEN_KINDS.get(type(g))
        if kind is None:
            raise Unsupported(f"{type(g).__name__} is not cached")
        _check_fields(g, _GEN_FIELDS)
        doc: dict[str, Any] = {"t": kind, "info": _json(_unmarked(g.generation_info))}
        if kind in ("cg", "cgc"):
            doc["m"] = _encode_message(g.message)  # type: ignore[attr-defined]
        else:
            doc["text"] = g.text
        out.append(doc)
    return {"v": _VERSION, "g": out}


# -- decoding -------------------------------------------------------------------------


def _scan(value: Any, depth: int = 0) -> None:
    """Refuse constructor markers anywhere (nothing of ours ever writes one)."""
    if depth > 64:
        raise BadPayload("nested too deeply")
    if isinstance(value, dict):
        if _is_lc_marker(value):
            raise BadPayload("LangChain constructor marker in payload")
        for v in value.values():
            _scan(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _scan(v, depth + 1)


def _want(cond: bool, what: str) -> None:
    if not cond:
        raise BadPayload(what)


def _opt_dict(v: Any) -> bool:
    return v is None or isinstance(v, dict)


def _decode_message(doc: Any) -> AIMessage:
    _want(isinstance(doc, dict), "message is not an object")
    kind = doc.get("t")
    _want(kind in _MSG_KEYS and set(doc) == _MSG_KEYS[kind], "unknown message shape")
    _want(isinstance(doc["content"], str | list), "content")
    _want(isinstance(doc["ak"], dict) and isinstance(doc["rm"], dict), "metadata")
    _want(doc["name"] is None or isinstance(doc["name"], str), "name")
    _want(isinstance(doc["tc"], list) and isinstance(doc["itc"], list), "tool calls")
    _want(_opt_dict(doc["um"]), "usage metadata")
    fields: dict[str, Any] = {
        "content": doc["content"], "additional_kwargs": doc["ak"],
        "response_metadata": doc["rm"], "name": doc["name"], "tool_calls": doc["tc"],
        "invalid_tool_calls": doc["itc"], "usage_metadata": doc["um"],
    }
    if kind == "aic":
        _want(isinstance(doc["tcc"], list) and doc["cp"] in (None, "last"), "chunk fields")
        fields["tool_call_chunks"] = doc["tcc"]
        fields["chunk_position"] = doc["cp"]
    return _MSG_CLASSES[kind](**fields)


def decode(value: Any) -> list[Generation]:
    """Validated generations from a stored value; raises ``BadPayload``."""
    _want(isinstance(value, dict) and value.get("v") == _VERSION and set(value) == {"v", "g"},
          "not a version-1 payload")
    gens = value["g"]
    _want(isinstance(gens, list) and len(gens) > 0, "no generations")
    _scan(gens)
    out: list[Generation] = []
    try:
        for doc in gens:
            _want(isinstance(doc, dict), "generation is not an object")
            kind = doc.get("t")
            _want(kind in _GEN_KEYS and set(doc) == _GEN_KEYS[kind], "unknown generation shape")
            _want(_opt_dict(doc["info"]), "generation_info")
            cls = _GEN_CLASSES[kind]
            if kind in ("cg", "cgc"):
                msg = _decode_message(doc["m"])
                _want((kind == "cgc") == isinstance(msg, AIMessageChunk), "chunk mismatch")
                out.append(cls(message=msg, generation_info=doc["info"]))  # type: ignore[call-arg]
            else:
                _want(isinstance(doc["text"], str), "text")
                out.append(cls(text=doc["text"], generation_info=doc["info"]))
    except BadPayload:
        raise
    except ValidationError as exc:
        raise BadPayload(f"invalid fields: {exc.error_count()} error(s)") from None
    except Exception as exc:  # LangChain's validators raise TypeError, KeyError, ...
        raise BadPayload(f"invalid fields: {type(exc).__name__}") from None
    return out


# -- fresh copies per hit -------------------------------------------------------------
#
# An L1 hit must cost little more than a dict lookup, so every hit gets new objects
# built the way ``model_copy`` builds them (same class, new ``__dict__``, copies of the
# pydantic bookkeeping) minus its per-call overhead, with fresh containers so callers
# may mutate what they get.  Everything that can be decided once per entry is.

_MUTABLE = (dict, list)
_new = object.__new__
# BaseModel keeps its state in a __dict__ and three slots; their descriptors' setters are
# the cheapest way to fill a new instance (object.__setattr__ looks each one up).
_SET_DICT = BaseModel.__dict__["__dict__"].__set__
_SET_FIELDS = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__
Mark = dict[str, Any]


def _copy(v: Any) -> Any:
    """Deep copy of JSON data (much cheaper than ``copy.deepcopy``)."""
    t = type(v)
    if t is dict:
        return {k: _copy(x) if type(x) in _MUTABLE else x for k, x in v.items()}
    if t is list:
        return [_copy(x) if type(x) in _MUTABLE else x for x in v]
    return v


def _copier(v: Any) -> Any:
    """The cheapest function returning a fresh deep copy of mutable ``v``."""
    if not v:
        return dict if type(v) is dict else list
    nested = any(type(x) in _MUTABLE for x in (v.values() if type(v) is dict else v))
    if nested:
        return lambda: _copy(v)
    return v.copy


def _state(obj: BaseModel) -> tuple[type[Any], dict[str, Any], frozenset[str], bool]:
    """(class, field values, fields set, has an extra dict) of a validated template."""
    extra, private = obj.__pydantic_extra__, obj.__pydantic_private__
    if extra or private:
        raise Unsupported("extra or private state")  # never so for decoded templates
    return type(obj), obj.__dict__.copy(), frozenset(obj.__pydantic_fields_set__), \
        extra is not None


def _maker(g: Generation) -> Any:
    """A function (mark, mark_text) -> a fresh copy of ``g`` carrying the mark."""
    g_cls, g_dict, g_fields, g_extra = _state(g)
    info = None if g.generation_info is None else _copier(g.generation_info)
    msg = getattr(g, "message", None)

    if msg is None:
        def make_text(mark: Mark | None, mark_text: bool) -> Generation:
            d = g_dict.copy()
            i = None if info is None else info()
            if mark is not None and mark_text:
                i = {**(i or {}), MARK: mark}
            d["generation_info"] = i
            new = _new(g_cls)
            _SET_DICT(new, d)
            _SET_FIELDS(new, set(g_fields))
            _SET_EXTRA(new, {} if g_extra else None)
            _SET_PRIVATE(new, None)
            return new  # type: ignore[no-any-return]

        return make_text

    m_cls, m_dict, m_fields, m_extra = _state(msg)
    # Only mutable values need copying; strings, numbers and None are shared.
    copiers = tuple((name, _copier(value)) for name, value in m_dict.items()
                    if name != "response_metadata" and type(value) in _MUTABLE)
    rm = _copier(msg.response_metadata)

    def make_chat(mark: Mark | None, mark_text: bool) -> Generation:
        md = m_dict.copy()
        for name, fresh in copiers:
            md[name] = fresh()
        r = rm()
        if mark is not None:
            r[MARK] = mark
        md["response_metadata"] = r
        m = _new(m_cls)
        _SET_DICT(m, md)
        _SET_FIELDS(m, set(m_fields))
        _SET_EXTRA(m, {} if m_extra else None)
        _SET_PRIVATE(m, None)
        d = g_dict.copy()
        d["generation_info"] = None if info is None else info()
        d["message"] = m
        new = _new(g_cls)
        _SET_DICT(new, d)
        _SET_FIELDS(new, set(g_fields))
        _SET_EXTRA(new, {} if g_extra else None)
        _SET_PRIVATE(new, None)
        return new  # type: ignore[no-any-return]

    return make_chat


class Template:
    """The validated generations of one entry, handed out as fresh marked copies."""

    __slots__ = ("_makers", "value")

    def __init__(self, value: Any, generations: list[Generation]) -> None:
        self.value = value  # the stored value these were built from (identity check)
        self._makers = [_maker(g) for g in generations]

    def make(self, mark: Mark | None, mark_text: bool) -> list[Generation]:
        """Fresh copies; ``mark`` (a new dict per call) is shared by this call's copies
        only when there is one generation."""
        makers = self._makers
        if len(makers) == 1:
            return [makers[0](mark, mark_text)]
        return [make(None if mark is None else dict(mark), mark_text) for make in makers]
