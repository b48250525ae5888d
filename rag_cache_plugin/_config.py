"""Configuration objects: keyword-only, validated, readable from ``RAG_CACHE_*``."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from ._errors import ConfigError
from ._policies import DEFAULT_POLICY

__all__ = ["CacheConfig", "RedisConfig", "SemanticConfig"]

_ENV_PREFIX = "RAG_CACHE_"
_MiB = 1024 * 1024


class _Frozen(BaseModel):
    # Attribute docstrings become field descriptions: the README's reference is built
    # from them, so code and documentation cannot drift apart.
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True,
                              use_attribute_docstrings=True)

    def __init__(self, **data: Any) -> None:
        # Re-raise as ConfigError so callers can catch one type (it is a ValueError too).
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(str(exc)) from exc

    @classmethod
    def _from_env(cls, env: Mapping[str, str], prefix: str, overrides: dict[str, Any]) -> Self:
        data: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            raw = env.get(prefix + name.upper())
            if raw is None:
                continue
            origin = str(info.annotation)
            # Tuples are comma-separated in the environment, mappings are JSON.
            if "tuple" in origin:
                data[name] = [p for p in raw.split(",") if p]
            elif "dict" in origin or "Mapping" in origin:
                try:
                    data[name] = json.loads(raw)
                except ValueError as exc:
                    raise ConfigError(f"{prefix}{name.upper()} must be a JSON object") from exc
            else:
                data[name] = raw
        data.update(overrides)
        return cls(**data)


class RedisConfig(_Frozen):
    """The L3 tier: a standalone Redis, a Redis Cluster, or a Sentinel-managed primary."""

    url: str = "redis://localhost:6379/0"
    """``redis://``, ``rediss://`` (TLS) or ``unix://`` address of a server or of any
    cluster node."""
    cluster: bool | None = None
    """None detects a cluster from the server's ``INFO cluster``."""
    prefix: str = Field(default="ragc", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    """First segment of every key the cache writes (ACL rules can be limited to it)."""
    timeout: float = Field(default=0.25, gt=0, le=60)
    """Deadline of every L3 call, in seconds."""
    connect_timeout: float = Field(default=0.5, gt=0, le=60)
    """Seconds to wait for a new connection."""
    breaker_threshold: int = Field(default=5, ge=1)
    """Consecutive failures that open the circuit breaker."""
    breaker_reset: float = Field(default=2.0, gt=0)
    """Seconds the breaker stays open before one probe call is let through."""
    max_connections: int = Field(default=64, ge=1)
    """Connections per pool (per node of a cluster)."""
    username: str | None = None
    """ACL user name."""
    password: SecretStr | None = None
    """Password (of the ACL user, or ``requirepass``)."""
    ssl_ca_certs: str | None = None
    """CA bundle that signs the server's certificate (TLS)."""
    ssl_certfile: str | None = None
    """Client certificate, for servers that require one (TLS)."""
    ssl_keyfile: str | None = None
    """Key of the client certificate."""
    sentinels: tuple[str, ...] = ()
    """``host:port`` of Redis Sentinels; the primary is looked up as ``sentinel_service``."""
    sentinel_service: str = "mymaster"
    """Name under which the Sentinels know the primary."""
    news_maxlen: int = Field(default=10_000, ge=100)
    """Approximate length kept of each per-namespace news stream."""

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        return v


class SemanticConfig(_Frozen):
    """Semantic matching of paraphrased questions."""

    embedder: Any = "default"
    """"default" (all-MiniLM-L6-v2 adapted to question equivalence, shipped with the
    package, needs the ``semantic`` extra), a LangChain ``Embeddings``, a LlamaIndex
    ``BaseEmbedding``, a sentence-transformers model, a model path/name, or any callable
    ``list[str] -> array``."""
    setting: Literal["strict", "balanced"] = "strict"
    """"strict": about 1% false hits on the calibration pairs; "balanced": about 5%."""
    target_false_hit_rate: float | None = Field(default=None, gt=0, lt=0.5)
    """A false-hit rate to calibrate the threshold for, instead of a setting."""
    threshold: float | None = Field(default=None, ge=0, le=1)
    """A raw decision threshold on the verifier's score; overrides ``setting``."""
    calibration: Path | None = None
    """A verifier calibration fitted on your own labelled pairs
    (``MatchVerifier.fit(pairs, embedder).save(path)``); None uses the shipped one."""
    top_k: int = Field(default=4, ge=1, le=100)
    """Candidates verified per lookup, best cosine first."""
    max_embed_chars: int = Field(default=2_000, ge=1)
    """Longer questions are matched exactly only (an event says so)."""
    model_id: str | None = None
    """Names the embedding model (vectors of different models are never compared);
    derived from the embedder when None."""
    ann: Literal["auto", "exact"] = "auto"
    """"auto": an HNSW index (usearch, the ``ann`` extra) for big partitions when installed."""
    ann_threshold: int = Field(default=5_000, ge=1)
    """Partition size from which the ANN index replaces exact search."""
    memo_entries: int = Field(default=16_384, ge=0)
    """Canonical questions whose embeddings are kept in memory (LRU)."""

    @field_validator("embedder")
    @classmethod
    def _needs_embedder(cls, v: Any) -> Any:
        if v is None:
            raise ValueError("SemanticConfig needs an embedder")
        return v


class CacheConfig(_Frozen):
    """Everything a ``RagCache`` needs.  The default is memory only, exact matching."""

    namespace: str = Field(default="default", min_length=1, max_length=256)
    """Tenant of the entries: lookups, invalidation and semantic search never cross it."""
    sqlite_path: Path | None = None
    """L2 file; None means no L2."""
    redis: RedisConfig | None = None
    """L3; None means no L3."""
    semantic: SemanticConfig | None = None
    """None means exact matching only."""
    ttl: float | None = Field(default=None, gt=0, le=100 * 365 * 86_400)
    """Default time to live of an entry in seconds; None keeps entries until evicted."""
    l1_max_entries: int = Field(default=10_000, ge=0)
    """Entries L1 holds at most; 0 turns L1 off."""
    l1_max_bytes: int = Field(default=128 * _MiB, ge=0)
    """Bytes L1 holds at most (encoded size plus object overhead)."""
    l1_policy: str = DEFAULT_POLICY
    """L1 eviction policy: "tinylfu" (W-TinyLFU, the default), "lru", "lfu" or "s3fifo"."""
    l1_ttl: float | None = Field(default=None, gt=0)
    """Cap on how long L1 keeps an entry; bounds staleness if news from peers is lost."""
    l2_max_bytes: int = Field(default=1024 * _MiB, ge=_MiB)
    """Size of the L2 file's entries beyond which the least recently used are culled."""
    max_entry_bytes: int = Field(default=4 * _MiB, ge=64)
    """Encoded values larger than this are not stored (an event says so)."""
    max_question_chars: int = Field(default=1_000_000, ge=1)
    """Longer questions (prompts) are not cached: a lookup misses, a store is refused."""
    promote_to: tuple[Literal["l1", "l2"], ...] = ("l1", "l2")
    """Tiers a hit in a lower tier is copied into."""
    key_secret: SecretStr | None = None
    """Keys the entry hash (BLAKE2b) so keys cannot be predicted without it."""
    signing_keys: tuple[SecretStr, ...] = ()
    """HMAC-SHA256 keys for entries in L2/L3: the first signs, all verify (rotation)."""
    encryption_keys: tuple[SecretStr, ...] = ()
    """AES-GCM keys (16, 24 or 32 bytes, hex or text): the first encrypts, all decrypt."""
    require_signature: bool = False
    """Refuse unsigned entries from L2/L3 even when signing keys are set."""
    sqlite_timeout: float = Field(default=2.0, gt=0)
    """SQLite busy timeout in seconds."""
    sqlite_pragmas: dict[str, int | str] = Field(default_factory=dict)
    """Extra ``PRAGMA name = value`` run on every L2 connection (e.g.
    ``{"max_page_count": 262144}`` for a hard cap on the file: per-connection
    pragmas only hold if every connection sets them)."""
    news_poll_interval: float = Field(default=0.2, gt=0)
    """How often peers' news (invalidations, replaced entries, new vectors) is read from
    the shared tiers, and this process's store news sent, in seconds."""
    single_flight_timeout: float = Field(default=10.0, gt=0, le=3600)
    """Longest wait, in seconds, of a ``lookup(..., single_flight=True)`` for another
    caller computing the same answer; also the lease of that caller's claim."""

    @field_validator("sqlite_pragmas")
    @classmethod
    def _plain_pragmas(cls, v: dict[str, int | str]) -> dict[str, int | str]:
        # They are spliced into SQL text (PRAGMA takes no parameters): words and
        # integers only.
        for name, value in v.items():
            if not re.fullmatch(r"[a-z_]{1,64}", name):
                raise ValueError(f"bad pragma name {name!r}")
            if isinstance(value, bool) or not (
                    isinstance(value, int) or re.fullmatch(r"[A-Za-z0-9_]{1,64}", value)):
                raise ValueError(f"bad value for pragma {name}: {value!r}")
        return v

    @field_validator("sqlite_path", mode="before")
    @classmethod
    def _empty_path_is_none(cls, v: Any) -> Any:
        return None if v == "" else v

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> CacheConfig:
        """Build from ``RAG_CACHE_*`` variables (``RAG_CACHE_REDIS_URL`` adds L3)."""
        env = os.environ if environ is None else environ
        nested: dict[str, Any] = {}
        if "redis" not in overrides and env.get(_ENV_PREFIX + "REDIS_URL"):
            nested["redis"] = RedisConfig._from_env(env, _ENV_PREFIX + "REDIS_", {})
        semantic = _ENV_PREFIX + "SEMANTIC_"
        if "semantic" not in overrides and any(k.startswith(semantic) for k in env):
            nested["semantic"] = SemanticConfig._from_env(env, semantic, {})
        return cls._from_env(env, _ENV_PREFIX, {**nested, **overrides})


def _default_text(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, tuple):
        return "(" + ", ".join(repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, int) and value >= _MiB and value % _MiB == 0:
        return f"{value // _MiB} MiB"
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}".replace(",", "_")
    return repr(value)


def reference_markdown() -> str:
    """The configuration reference of the README: every option, its default, its
    environment variable and what it does."""
    parts: list[str] = []
    sections: list[tuple[type[_Frozen], str, str]] = [
        (CacheConfig, _ENV_PREFIX, "CacheConfig"),
        (RedisConfig, _ENV_PREFIX + "REDIS_", "RedisConfig (`CacheConfig(redis=...)`; "
                                              "`RAG_CACHE_REDIS_URL` turns L3 on)"),
        (SemanticConfig, _ENV_PREFIX + "SEMANTIC_", "SemanticConfig (`CacheConfig(semantic=...)`; "
                                                    "any `RAG_CACHE_SEMANTIC_*` turns it on)"),
    ]
    for model, prefix, title in sections:
        parts += [f"### {title}", "", "| option | default | environment | meaning |",
                  "|---|---|---|---|"]
        for name, info in model.model_fields.items():
            nested = name in ("redis", "semantic")
            env = "see below" if nested else f"`{prefix}{name.upper()}`"
            doc = " ".join((info.description or "").split()).replace("|", "\\|")
            default = _default_text(info.get_default(call_default_factory=True))
            parts.append(f"| `{name}` | `{default}` | {env} | {doc} |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"

