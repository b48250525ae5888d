"""The settings the tuner turns, read and written on a live ``RagCache``, and the
changes it proposes, always inside the bounds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .._policies import POLICIES
from .bounds import TuningBounds
from .shadow import ShadowReport

__all__ = ["Change", "Knobs"]

_TIERS = ("l1", "l2")


@dataclass(frozen=True, slots=True)
class Change:
    """One setting from ``old`` to ``new`` (JSON values), and why."""

    action: str
    knob: str
    old: Any
    new: Any
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Knobs:
    """Reads and writes the tunable settings of ``cache``: ``default_ttl``, the L1
    bounds and policy, ``promote_to`` and (through ``semantic``) thresholds."""

    def __init__(self, cache: Any, bounds: TuningBounds, semantic: Any = None) -> None:
        self.cache = cache
        self.bounds = bounds
        self.semantic = semantic

    # -- reading ----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        l1 = self.cache.l1
        out: dict[str, Any] = {
            "default_ttl": self.cache.default_ttl, "l1_max_entries": l1.max_entries,
            "l1_max_bytes": l1.max_bytes, "l1_policy": l1.policy.name,
            "promote_to": list(self.cache.promote_to)}
        if self.semantic is not None:
            out["semantic"] = self.semantic.get()
        return out

    def extra_metrics(self, m: Mapping[str, float | None]) -> dict[str, float | None]:
        """Metrics only the knobs know (the semantic bound and threshold)."""
        return {} if self.semantic is None else self.semantic.metrics(m)

    def _entry_bytes(self) -> float:
        l1 = self.cache.l1
        n = len(l1)
        return l1.bytes_used / n if n else 0.0

    def effective(self, entries: int, max_bytes: int) -> int:
        """Entries L1 can hold under both bounds at today's mean entry size."""
        size = self._entry_bytes()
        return max(0, min(entries, int(max_bytes // size))) if size > 0 else entries

    def capacity(self) -> int:
        l1 = self.cache.l1
        return self.effective(l1.max_entries, l1.max_bytes)

    def growth(self, step: float) -> dict[float, dict[str, int]]:
        """Effective growth factor -> the L1 bounds giving it, for moves of up to
        ``step**3`` inside the bounds.  The byte bound grows only where it would
        stop the entries from fitting: it is a limit on memory, not an allocation."""
        l1, b = self.cache.l1, self.bounds
        base = self.capacity()
        out: dict[float, dict[str, int]] = {}
        if base <= 0:
            return out
        for k in (1, 2, 3):
            e = max(min(round(l1.max_entries * step ** k), b.max_l1_entries or 0),
                    l1.max_entries)
            m = l1.max_bytes
            if self.effective(e, m) < e:
                m = max(min(round(m * step ** k), b.max_l1_bytes or 0), m)
            f = self.effective(e, m) / base
            if f > 1.0 and f not in out:
                out[f] = {"max_entries": e, "max_bytes": m}
        return out

    def shrink(self, step: float) -> tuple[float, dict[str, int]] | None:
        """(effective factor, bounds) one step smaller, or None at the lower bounds.
        Whichever bound limits L1 now is the one lowered."""
        l1, b = self.cache.l1, self.bounds
        e, m = l1.max_entries, l1.max_bytes
        if self.effective(e, m) < e:  # the bytes limit: lower them
            m = min(max(round(m / step), b.min_l1_bytes or 1), m)
        else:
            e = min(max(round(e / step), b.min_l1_entries or 1), e)
        base = self.capacity()
        f = self.effective(e, m) / base if base else 1.0
        return (f, {"max_entries": e, "max_bytes": m}) if f < 1.0 else None

    # -- proposing --------------------------------------------------------------------

    def propose(self, action: str, *, step: float, shadow: ShadowReport | None,
                metrics: Mapping[str, float | None]) -> Change | str:
        """The change ``action`` asks for now, or why there is none."""
        return getattr(self, f"_propose_{action}")(step, shadow, metrics)  # type: ignore[no-any-return]

    def _propose_increase_ttl(self, step: float, shadow: Any, m: Any) -> Change | str:
        ttl, hi = self.cache.default_ttl, self.bounds.max_ttl
        if ttl is None:
            return "no default TTL: entries never expire"
        new = ttl * step if hi is None else min(ttl * step, hi)
        if new <= ttl:
            return f"TTL is at its bound ({hi:g} s)"
        return Change("increase_ttl", "default_ttl", ttl, new,
                      f"{m.get('expired_misses') or 0:.0f} lookups missed an entry that had "
                      f"expired ({100 * (m.get('expired_miss_rate') or 0):.1f}% of lookups)")

    def _propose_decrease_ttl(self, step: float, shadow: Any, m: Any) -> Change | str:
        ttl, lo = self.cache.default_ttl, self.bounds.min_ttl
        if not self.bounds.allow_ttl_decrease:
            return "shortening the TTL is not allowed (TuningBounds.allow_ttl_decrease)"
        if ttl is None:
            return "no default TTL to shorten"
        new = ttl / step if lo is None else max(ttl / step, lo)
        if new >= ttl:
            return f"TTL is at its bound ({lo:g} s)"
        return Change("decrease_ttl", "default_ttl", ttl, new,
                      f"L2 is {100 * (m.get('l2_fill') or 0):.0f}% full and nothing is asked "
                      "for again after it expires")

    def _l1_now(self) -> dict[str, int]:
        return {"max_entries": self.cache.l1.max_entries, "max_bytes": self.cache.l1.max_bytes}

    def _propose_increase_l1(self, step: float, shadow: ShadowReport | None, m: Any
                             ) -> Change | str:
        options = self.growth(step)
        if not options:
            return "L1 is at its bound (max_l1_entries / max_l1_bytes)"
        if shadow is None or shadow.grow_factor is None:
            return "the shadow simulation shows no gain from a larger L1"
        f = min(options, key=lambda x: abs(x - shadow.grow_factor))  # type: ignore[operator]
        return Change("increase_l1", "l1", self._l1_now(), options[f],
                      f"shadow simulation: {100 * shadow.current:.1f}% -> "
                      f"{100 * shadow.sizes.get(f, shadow.current + shadow.grow_gain):.1f}% "
                      f"L1 hits with {f:.2f}x the capacity")

    def _propose_decrease_l1(self, step: float, shadow: ShadowReport | None, m: Any
                             ) -> Change | str:
        option = self.shrink(step)
        if option is None:
            return "L1 is at its lower bound"
        if shadow is None or shadow.shrink_loss is None:
            why = f"L1 {100 * (m.get('l1_fill') or 0):.0f}% full"  # a user rule's reading
        else:
            why = (f"shadow simulation: {option[0]:.2f}x the capacity loses only "
                   f"{100 * shadow.shrink_loss:.2f} points of L1 hits")
        return Change("decrease_l1", "l1", self._l1_now(), option[1], why)

    def _propose_switch_policy(self, step: float, shadow: ShadowReport | None, m: Any
                               ) -> Change | str:
        current = self.cache.l1.policy.name
        if shadow is None:
            return "no shadow simulation yet"
        best = shadow.best_policy
        if best == current or best not in self.bounds.policies:
            return f"{current} is the best allowed policy on the sample"
        return Change("switch_policy", "l1_policy", current, best,
                      f"shadow simulation: {best} {100 * shadow.policies[best]:.1f}% vs "
                      f"{current} {100 * shadow.current:.1f}% L1 hits")

    def _propose_rebalance(self, step: float, shadow: Any, m: Any) -> Change | str:
        if not self.bounds.rebalance:
            return "rebalancing is not allowed (TuningBounds.rebalance)"
        promote = tuple(self.cache.promote_to)
        if "l1" not in promote:
            new = ("l1", *promote)
            why = "hits from L2/L3 are not copied into L1"
        elif (self.cache.l2 is not None and getattr(self.cache, "l3", None) is not None
              and "l2" not in promote and (m.get("l3_hit_rate") or 0) > 0):
            new = (*promote, "l2")
            why = "hits from L3 are not copied into L2"
        else:
            return "every tier is already promoted into"
        new = tuple(t for t in _TIERS if t in new)
        return Change("rebalance", "promote_to", list(promote), list(new),
                      f"{why}: {100 * (m.get('lower_hit_rate') or 0):.1f}% of lookups were "
                      "answered below L1")

    def _propose_tighten_semantic(self, step: float, shadow: Any, m: Any) -> Change | str:
        if self.semantic is None or not self.bounds.semantic:
            return "no semantic layer to tune"
        return self.semantic.propose_tighten(m)  # type: ignore[no-any-return]

    def _propose_relax_semantic(self, step: float, shadow: Any, m: Any) -> Change | str:
        if self.semantic is None or not self.bounds.semantic:
            return "no semantic layer to tune"
        return self.semantic.propose_relax(m)  # type: ignore[no-any-return]

    # -- writing ----------------------------------------------------------------------

    def set(self, knob: str, value: Any) -> None:
        cache = self.cache
        if knob == "default_ttl":
            cache.default_ttl = None if value is None else float(value)
        elif knob == "l1":
            old_entries = cache.l1.max_entries
            cache.l1.resize(max_entries=int(value["max_entries"]),
                            max_bytes=int(value["max_bytes"]))
            name = cache.l1.policy.name
            if cache.l1.max_entries != old_entries and name in POLICIES:
                # Policies size their regions (window, probation, sketch) by the capacity
                # they were built for: rebuild for the new one, keeping the resident keys.
                cache.l1.set_policy(name)
        elif knob == "l1_policy":
            cache.l1.set_policy(str(value))
        elif knob == "promote_to":
            cache.promote_to = tuple(value)
        elif knob == "semantic" and self.semantic is not None:
            self.semantic.set(value)
        else:
            raise ValueError(f"unknown setting {knob!r}")

    def apply(self, change: Change) -> None:
        self.set(change.knob, change.new)

    def revert(self, change: Change) -> None:
        self.set(change.knob, change.old)
