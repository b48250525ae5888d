"""Decides whether a semantic candidate is the same question (interim version).

A cosine threshold plus lexical guards: two questions that differ in a number, a
capitalised name, a negation or a direction word, or that swap the order of the
same words ("USD to EUR" / "EUR to USD"), never match whatever their cosine.
Thresholds were read off plain all-MiniLM-L6-v2 cosines of 3,000 Quora pairs
(strict: about 1% false hits; balanced: about 5%).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["MatchVerifier", "Verdict"]

Setting = Literal["strict", "balanced"]

# (false-hit rate, cosine threshold) measured on a sample of the Quora pairs.
_CURVE = ((0.01, 0.959), (0.02, 0.936), (0.05, 0.902), (0.10, 0.849), (0.20, 0.789))
_SETTINGS: dict[str, float] = {"strict": 0.959, "balanced": 0.902}

_WORD = re.compile(r"[^\W_]+(?:['\u2019.][^\W_]+)*|[$\u20ac\u00a3\u00a5%]")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NEGATIONS = {"not", "no", "never", "nobody", "nothing", "none", "neither", "nor", "without",
              "cannot", "can't", "won't", "don't", "doesn't", "didn't", "isn't", "aren't",
              "wasn't", "weren't", "shouldn't", "wouldn't", "couldn't", "hasn't", "haven't"}
_DIRECTION_PAIRS = (("to", "from"), ("increase", "decrease"), ("up", "down"),
                    ("before", "after"), ("buy", "sell"), ("import", "export"),
                    ("above", "below"), ("more", "less"), ("higher", "lower"),
                    ("max", "min"), ("maximum", "minimum"), ("best", "worst"),
                    ("largest", "smallest"), ("biggest", "smallest"), ("add", "remove"),
                    ("enable", "disable"), ("in", "out"), ("on", "off"), ("north", "south"),
                    ("east", "west"), ("win", "lose"), ("open", "close"))
_DIRECTION = {w for pair in _DIRECTION_PAIRS for w in pair}
_ORDER_WORDS = {"to", "from", "vs", "versus", "than", "into", "over", "under"}
_NOT_NAMES = {"i", "what", "how", "why", "who", "when", "where", "which", "is", "are", "can",
              "do", "does", "the", "a", "an"}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision on one candidate, with the evidence behind it."""

    match: bool
    score: float
    evidence: dict[str, object] = field(default_factory=dict)


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _names(words: list[str]) -> set[str]:
    # Capitalised words after the first are taken as names (France, Gmail, Python).
    return {w.casefold() for w in words[1:] if w[:1].isupper() and w.casefold() not in _NOT_NAMES}


def _guards(query: str, cached: str) -> dict[str, object]:
    a, b = _words(query), _words(cached)
    fa = [w.casefold().replace("\u2019", "'") for w in a]
    fb = [w.casefold().replace("\u2019", "'") for w in b]
    fired: dict[str, object] = {}
    na, nb = sorted(_NUMBER.findall(query)), sorted(_NUMBER.findall(cached))
    if na != nb:
        fired["number"] = [na, nb]
    ea, eb = _names(a), _names(b)
    if ea ^ eb:
        fired["entity"] = sorted(ea ^ eb)
    nega = sum(w in _NEGATIONS or w.endswith("n't") for w in fa)
    negb = sum(w in _NEGATIONS or w.endswith("n't") for w in fb)
    if (nega % 2) != (negb % 2):
        fired["negation"] = [nega, negb]
    only_a, only_b = (set(fa) - set(fb)) & _DIRECTION, (set(fb) - set(fa)) & _DIRECTION
    flipped = [f"{x}/{y}" for x, y in _DIRECTION_PAIRS
               if (x in only_a and y in only_b) or (y in only_a and x in only_b)]
    if flipped:
        fired["direction"] = flipped  # one asks "increase", the other "decrease"
    elif sorted(fa) == sorted(fb) and fa != fb and (set(fa) & _ORDER_WORDS):
        fired["order"] = True  # same words, swapped around "to", "vs", "than"...
    return fired


class MatchVerifier:
    """Cosine threshold plus lexical guards; ``score`` is the cosine (0 when a guard fires)."""

    def __init__(self, model_id: str, threshold: float, setting: Setting = "strict") -> None:
        if not -1.0 <= threshold <= 1.0:
            raise ValueError("threshold must be within [-1, 1]")
        self.model_id = model_id
        self.setting = setting
        self._threshold = float(threshold)

    @classmethod
    def for_model(cls, model_id: str, setting: Setting = "strict",
                  target_false_hit_rate: float | None = None,
                  threshold: float | None = None) -> MatchVerifier:
        if setting not in _SETTINGS:
            raise ValueError(f"setting must be 'strict' or 'balanced', not {setting!r}")
        if threshold is None and target_false_hit_rate is not None:
            ok = [t for rate, t in _CURVE if rate <= target_false_hit_rate]
            threshold = min(ok) if ok else _CURVE[0][1]
        return cls(model_id, _SETTINGS[setting] if threshold is None else threshold, setting)

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def candidate_floor(self) -> float:
        # The score is the cosine: nothing below the threshold can match.
        return self._threshold

    def tighten(self, threshold: float | None = None) -> float:
        """Halve the distance to 1."""
        t = self._threshold if threshold is None else float(threshold)
        return min(1.0, t + (1.0 - t) / 2)

    def verify(self, query_text: str, cached_text: str, cosine: float) -> Verdict:
        fired = _guards(query_text, cached_text)
        score = 0.0 if fired else float(cosine)
        evidence: dict[str, object] = {"cosine": float(cosine), "guards": fired,
                                       "blocked_by": sorted(fired), "threshold": self._threshold}
        return Verdict(match=score >= self._threshold and not fired, score=score,
                       evidence=evidence)
