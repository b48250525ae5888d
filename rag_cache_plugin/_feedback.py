"""``feedback()`` for semantic hits: a wrong hit tightens its partition's threshold
and blocks that exact (query, entry) pair; a confirmed hit is counted.  Both persist
in L2 and L3 and reach running peers through the news feed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._keys import canonicalize

if TYPE_CHECKING:
    from ._core import CacheHit
    from ._semantic import SemanticMatcher

__all__ = ["apply_news", "record_feedback"]


def record_feedback(m: SemanticMatcher, hit: CacheHit, correct: bool) -> None:
    from ._semantic import query_hash

    ns, partition = hit.namespace, hit.partition  # the core emits FeedbackReported
    if hit.kind != "semantic":
        return  # a wrong exact hit is dropped by the core
    state = m.feedback_state(ns)
    if correct:
        state.confirmed[partition] = state.confirmed.get(partition, 0) + 1
        m.shared.save_feedback(ns, partition, "confirm", m.model_tag, 1.0, "add")
        return
    tighter = float(m.verifier.tighten(m.threshold(ns, partition)))
    state.thresholds[partition] = max(tighter, state.thresholds.get(partition, -1.0))
    m.shared.save_feedback(ns, partition, "threshold", m.model_tag, tighter, "max")
    body: dict[str, Any] = {"p": partition, "m": m.model_tag, "t": tighter}
    query = (hit.evidence or {}).get("query")
    if isinstance(query, str):
        qh = query_hash(canonicalize(query))
        state.blocked.add((partition, qh, hit.key))
        m.shared.save_feedback(ns, partition, "block", f"{qh}:{hit.key}", 1.0, "set")
        body["b"] = [qh, hit.key]
    m.cache.news.publish(ns, "fb", body)


def apply_news(m: SemanticMatcher, namespace: str, body: dict[str, Any]) -> None:
    """A peer's feedback (already persisted by that peer)."""
    state = m.feedback_state(namespace)
    partition = body.get("p")
    if not isinstance(partition, str):
        return
    t = body.get("t")
    if body.get("m") == m.model_tag and isinstance(t, int | float):
        state.thresholds[partition] = max(float(t), state.thresholds.get(partition, -1.0))
    b = body.get("b")
    if isinstance(b, list) and len(b) == 2 and all(isinstance(x, str) for x in b):
        state.blocked.add((partition, b[0], b[1]))
