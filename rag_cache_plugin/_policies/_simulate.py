"""Replay an access trace through a policy the way the L1 tier drives it."""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from ._base import EvictionPolicy, PolicyFactory

__all__ = ["simulate"]


def simulate(policy: str | PolicyFactory, trace: Iterable[Hashable], capacity: int) -> float:
    """Hit ratio of ``policy`` (a registered name or a factory) on ``trace`` with room
    for ``capacity`` entries; 0.0 for an empty trace.

    A miss is ``on_miss`` then ``on_insert`` then evictions while over capacity, a hit
    is ``on_hit``: exactly the calls ``MemoryTier`` makes, so shadow simulations of
    recent samples predict what the tier would see.
    """
    from . import make_policy  # the registry lives in the package, which imports us

    p: EvictionPolicy = (
        make_policy(policy, capacity) if isinstance(policy, str) else policy(capacity)
    )
    # Bound methods in locals: this loop is the tuner's hot path.
    on_hit, on_miss, on_insert = p.on_hit, p.on_miss, p.on_insert
    on_remove, victim = p.on_remove, p.victim
    resident: set[Hashable] = set()
    add, discard = resident.add, resident.discard
    hits = requests = 0
    for key in trace:
        requests += 1
        if key in resident:
            hits += 1
            on_hit(key)
            continue
        on_miss(key)
        add(key)
        on_insert(key)
        while len(resident) > capacity:
            out = victim()
            if out not in resident:
                raise RuntimeError(f"{type(p).__name__}.victim() returned non-resident {out!r}")
            discard(out)
            on_remove(out)
    return hits / requests if requests else 0.0
