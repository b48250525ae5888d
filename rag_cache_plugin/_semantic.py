"""``SemanticMatcher``: the semantic layer ``RagCache`` calls after every exact tier missed.

A lookup embeds the canonical question (memoised), searches only its own partition
(namespace + model settings + context) for candidates above the verifier's floor,
verifies the best few against the partition's threshold, and then fetches the entry
through the tiers like any read, so an entry that expired or was invalidated is never
returned (the index only proposes).  The final decision is re-checked against the
fetched entry's own question and vector, which the codec authenticates.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ._config import SemanticConfig
from ._core import CacheHit
from ._embedding import as_embedder
from ._entry import Entry
from ._events import TierName
from ._keys import canonicalize
from ._semantic_embed import EmbeddingMemo, EmbeddingSide
from ._semantic_fetch import afetch, fetch
from ._semantic_load import PartitionLoader
from ._semantic_store import FeedbackState, SharedState
from ._tiers import Ref
from ._vector_index import ANN_EPSILON, Candidate, SemanticIndex
from ._verifier import MatchVerifier, Verdict

if TYPE_CHECKING:
    from ._core import RagCache

__all__ = ["SemanticMatcher"]

_log = logging.getLogger("rag_cache_plugin")
_REAP_INTERVAL = 30.0  # seconds between sweeps of a partition for expired rows

def query_hash(canonical: str) -> str:
    return hashlib.blake2b(canonical.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class SemanticMatcher(EmbeddingSide):
    """Implements ``_core_base.SemanticLayer`` for one ``RagCache``."""

    def __init__(self, cache: RagCache, config: SemanticConfig) -> None:
        self.cache = cache
        self.config = config
        self.embedder = as_embedder(config.embedder, model_id=config.model_id)
        self.model_id: str = self.embedder.model_id
        self.model_tag = hashlib.blake2b(self.model_id.encode(), digest_size=6).hexdigest()
        if config.calibration is not None:  # fitted by the user on their own pairs
            self.verifier = MatchVerifier.load(
                config.calibration, config.setting,
                target_false_hit_rate=config.target_false_hit_rate, threshold=config.threshold)
        else:
            self.verifier = MatchVerifier.for_model(
                self.model_id, config.setting,
                target_false_hit_rate=config.target_false_hit_rate, threshold=config.threshold)
        self.memo = EmbeddingMemo(config.memo_entries)
        self.shared = SharedState(cache, self.model_id, self.model_tag)
        self.loader = PartitionLoader(self)
        self.dim: int | None = None
        self._indexes: dict[str, SemanticIndex] = {}
        self._namespace_of: dict[str, str] = {}  # partition -> namespace
        self._where: dict[str, str] = {}  # entry key -> partition
        self._feedback: dict[str, FeedbackState] = {}
        self._noted: set[str] = set()  # namespaces whose model was recorded in L2
        self._lock = threading.RLock()

    # -- partitions ---------------------------------------------------------------

    def index(self, namespace: str, partition: str) -> SemanticIndex | None:
        """The partition's index, created empty if needed."""
        idx = self._indexes.get(partition)
        if idx is not None:
            return idx
        with self._lock:
            idx = self._indexes.get(partition)
            if idx is None:
                ann = self.config.ann_threshold if self.config.ann == "auto" else None
                idx = self._indexes[partition] = SemanticIndex(self.dim, ann_threshold=ann)
                self._namespace_of[partition] = namespace
        return idx

    def insert(self, namespace: str, partition: str, key: str, question: str,
               vec: np.ndarray, expires: float | None) -> None:
        idx = self.index(namespace, partition)
        if idx is not None:
            idx.add(key, question, vec, expires)
            self._where[key] = partition

    def forget(self, namespace: str, partition: str, keys: list[str], *, l3: bool) -> None:
        idx = self._indexes.get(partition)
        for key in keys:
            if idx is not None:
                idx.remove(key)
            if self._where.get(key) == partition:
                del self._where[key]
        if l3:
            self.shared.drop_vectors(namespace, partition, keys)

    def _ready(self, ref: Ref, now: float) -> SemanticIndex | None:
        idx = self.index(ref.namespace, ref.partition)
        if idx is None:
            return None
        if not idx.loaded and now >= idx.retry_at:
            self.feedback_state(ref.namespace)  # first use: read it here, off any event loop
            self.loader.load(idx, ref.namespace, ref.partition, now)
        if now >= idx.next_reap:
            idx.next_reap = now + _REAP_INTERVAL
            gone = idx.reap(now)
            if gone:
                self.forget(ref.namespace, ref.partition, gone, l3=True)
        return idx

    # -- lookup -------------------------------------------------------------------

    def threshold(self, namespace: str, partition: str) -> float:
        learned = self.feedback_state(namespace).thresholds.get(partition)
        base = self.verifier.threshold
        return base if learned is None else max(base, learned)

    def _candidates(self, idx: SemanticIndex, ref: Ref, question: str, canonical: str,
                    q: np.ndarray, now: float) -> list[tuple[Candidate, Verdict, float]]:
        """Candidates that pass verification on the index's data, best first."""
        state = self.feedback_state(ref.namespace)
        thr = self.threshold(ref.namespace, ref.partition)
        slack = ANN_EPSILON if idx.approximate else 0.0
        qh = query_hash(canonical) if state.blocked else ""
        out: list[tuple[Candidate, Verdict, float]] = []
        for c in idx.search(q, self.config.top_k, self.verifier.candidate_floor, now):
            if qh and (ref.partition, qh, c.key) in state.blocked:
                continue
            # Optimistic on ANN cosines: the final check uses the entry's exact vector.
            cos = min(1.0, c.cosine + slack)
            v = self.verifier.verify(question, c.question, cos)
            if v.match and v.score >= thr:
                out.append((c, v, cos))
        return out

    def _decide(self, ref: Ref, question: str, q: np.ndarray,
                pre: tuple[Candidate, Verdict, float], entry: Entry,
                tier: TierName) -> CacheHit | None:
        """Re-check against the fetched entry's own (authenticated) question and vector."""
        if entry.partition != ref.partition or entry.namespace != ref.namespace:
            return None
        cand, verdict, pre_cos = pre
        stored = self.as_vector(entry.vector)
        cosine = cand.cosine if stored is None else float(np.dot(stored, q))
        if entry.question != cand.question or cosine != pre_cos:
            verdict = self.verifier.verify(question, entry.question, cosine)
        thr = self.threshold(ref.namespace, ref.partition)
        if not verdict.match or verdict.score < thr:
            return None
        evidence = {**verdict.evidence, "cosine": cosine, "threshold": thr, "query": question,
                    "model": self.model_id}
        return CacheHit(entry.value, tier, "semantic", verdict.score, entry.key, ref.namespace,
                        ref.partition, entry.question, entry.expires, evidence)

    def lookup(self, ref: Ref, question: str, canonical: str, now: float) -> CacheHit | None:
        if self._too_long(canonical, ref.namespace):
            return None
        idx = self._ready(ref, now)
        if idx is None or not len(idx):
            return None  # nothing to compare with: do not pay for an embedding
        q = self.embed_many([canonical], ref.namespace)[0]
        if q is None:
            return None
        for pre in self._candidates(idx, ref, question, canonical, q, now):
            key = pre[0].key
            entry, tier, certain = fetch(self.cache, Ref(key, ref.namespace, ref.partition), now)
            if entry is None:
                if certain:
                    self.forget(ref.namespace, ref.partition, [key], l3=True)
                continue
            hit = self._decide(ref, question, q, pre, entry, tier)
            if hit is not None:
                if tier != "l1":
                    self.cache._promote(entry, tier, now)
                return hit
        return None

    async def alookup(self, ref: Ref, question: str, canonical: str,
                      now: float) -> CacheHit | None:
        if self._too_long(canonical, ref.namespace):
            return None
        idx = self._indexes.get(ref.partition)
        if idx is None or (not idx.loaded and now >= idx.retry_at):
            idx = await asyncio.to_thread(self._ready, ref, now)  # reads L2/L3: off the loop
        else:
            idx = self._ready(ref, now)
        if idx is None or not len(idx):
            return None
        q = await self.aembed_one(canonical, ref.namespace)
        if q is None:
            return None
        for pre in self._candidates(idx, ref, question, canonical, q, now):
            key = pre[0].key
            ref_c = Ref(key, ref.namespace, ref.partition)
            entry, tier, certain = await afetch(self.cache, ref_c, now)
            if entry is None:
                if certain:
                    self.forget(ref.namespace, ref.partition, [key], l3=True)
                continue
            hit = self._decide(ref, question, q, pre, entry, tier)
            if hit is not None:
                if tier != "l1":
                    await self.cache._apromote(entry, tier, now)
                return hit
        return None

    # -- changes from this process --------------------------------------------------

    def added(self, entry: Entry) -> None:
        vec = self.as_vector(entry.vector)
        if vec is None:
            return
        self.insert(entry.namespace, entry.partition, entry.key, entry.question, vec,
                    entry.expires)
        self.shared.put_vector(entry, self.cache._clock())
        if entry.namespace not in self._noted:
            self._noted.add(entry.namespace)
            self.shared.note_model(entry.namespace)

    def news_fields(self, entry: Entry) -> dict[str, Any]:
        if entry.vector is None:
            return {}
        return {"p": entry.partition, "q": entry.question, "x": entry.expires,
                "m": self.model_tag, "v": base64.b64encode(entry.vector).decode("ascii")}

    def removed(self, keys: Iterable[str], namespace: str | None = None,
                partitions: Mapping[str, str] | None = None) -> None:
        by_partition: dict[str, list[str]] = {}
        for key in keys:
            partition = (partitions or {}).get(key) or self._where.get(key)
            if partition is not None:
                by_partition.setdefault(partition, []).append(key)
        for partition, ks in by_partition.items():
            ns = namespace or self._namespace_of.get(partition)
            if ns is not None:
                # Only the process that removed the entries cleans L3 (namespace given).
                self.forget(ns, partition, ks, l3=namespace is not None)

    def cleared(self, namespace: str | None) -> None:
        with self._lock:
            gone = [p for p, ns in self._namespace_of.items()
                    if namespace is None or ns == namespace]
            for p in gone:
                self._indexes.pop(p, None)
                self._namespace_of.pop(p, None)
            gone_set = set(gone)
            self._where = {k: p for k, p in self._where.items() if p not in gone_set}

    # -- news from peers ------------------------------------------------------------

    def on_news(self, namespace: str, kind: str, body: dict[str, Any]) -> None:
        if kind == "put" and body.get("m") == self.model_tag and "v" in body:
            try:
                raw = base64.b64decode(body["v"], validate=True)
                key, partition, question = str(body["key"]), str(body["p"]), str(body["q"])
                expires = body.get("x")
                expires = None if expires is None else float(expires)
            except (KeyError, ValueError, TypeError):
                return
            self.learn_dim(namespace)
            vec = self.as_vector(raw)
            if vec is not None:
                self.insert(namespace, partition, key, question, vec, expires)
                self.memo.put(canonicalize(question), vec)
        elif kind == "fb":
            self.apply_feedback_news(namespace, body)

    # -- feedback ---------------------------------------------------------------------

    def feedback_state(self, namespace: str) -> FeedbackState:
        state = self._feedback.get(namespace)
        if state is None:
            state = self._feedback.setdefault(namespace, self.shared.load_feedback(namespace))
        return state

    def feedback(self, hit: CacheHit, correct: bool) -> None:
        from ._feedback import record_feedback

        record_feedback(self, hit, correct)

    def apply_feedback_news(self, namespace: str, body: dict[str, Any]) -> None:
        from ._feedback import apply_news

        apply_news(self, namespace, body)

    # -- introspection and closing ------------------------------------------------------

    def info(self) -> dict[str, Any]:
        with self._lock:
            parts = {p: idx.info() for p, idx in self._indexes.items()}
        return {"model_id": self.model_id, "dim": self.dim, "memo": len(self.memo),
                "threshold": self.verifier.threshold, "partitions": parts}

    def flush(self, timeout: float = 5.0) -> bool:
        return self.shared.flush(timeout)

    def close(self) -> None:
        self.shared.close()
