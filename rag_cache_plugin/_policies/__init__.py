"""L1 eviction policies: pure bookkeeping over keys, O(1) per operation.

A policy never holds values.  The tier tells it what happened (hit, miss,
insert, removal) and asks it for the next victim while the tier is over its
bounds.  A victim may be a key the policy declines to keep, even the one just
inserted: that is how admission works (TinyLFU turns away a key leaving its
window when it is less popular than the key it would replace).

``simulate`` replays a trace exactly as the tier drives a policy; the benchmark
and the auto-tuner's shadow simulations use it.
"""

from __future__ import annotations

from ._base import EvictionPolicy, PolicyFactory
from ._lfu import LFUPolicy
from ._lru import LRUPolicy
from ._s3fifo import S3FIFOPolicy
from ._simulate import simulate
from ._tinylfu import TinyLFUPolicy

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "EvictionPolicy",
    "LFUPolicy",
    "LRUPolicy",
    "PolicyFactory",
    "S3FIFOPolicy",
    "TinyLFUPolicy",
    "make_policy",
    "simulate",
]

POLICIES: dict[str, PolicyFactory] = {
    "lru": LRUPolicy,
    "lfu": LFUPolicy,
    "tinylfu": TinyLFUPolicy,
    "s3fifo": S3FIFOPolicy,
}
"""Policy name -> factory taking the capacity in entries."""

DEFAULT_POLICY = "tinylfu"
"""Best on ``benchmarks/bench_eviction.py``: never 0.5 points below LRU on any trace and
capacity there, 5+ points above it on average (results in ``benchmarks/results/``)."""


def make_policy(name: str, capacity: int) -> EvictionPolicy:
    """Build the registered policy ``name`` for ``capacity`` entries."""
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown eviction policy {name!r}; known: {sorted(POLICIES)}") from None
    return factory(capacity)
