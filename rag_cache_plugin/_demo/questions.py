"""The demo's questions: families of one question with its exact and lexical
repeats and its paraphrases, plus look-alikes (a different question that reads
almost the same: another product, day, number or direction), and a workload
built from them with the outcome each ask must (or should) have."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from .._keys import canonicalize

__all__ = ["FAMILIES", "FAQ", "Ask", "Family", "build_workload"]

Expect = Literal["miss", "exact", "paraphrase"]
Variant = Literal["original", "repeat", "lexical", "paraphrase"]


@dataclass(frozen=True, slots=True)
class Family:
    """One question.  ``twin``: the family this one is a look-alike of."""

    id: str
    question: str
    lexical: str
    paraphrases: tuple[str, ...] = ()
    twin: str | None = None


@dataclass(frozen=True, slots=True)
class Ask:
    """One question of the workload and what the cache must do with it.

    ``expect``: "miss" (never asked in any form: answering it from the cache
    would be a false hit), "exact" (asked before, same canonical text: must hit)
    or "paraphrase" (another wording of an answered question: should hit
    semantically).  ``lookalike``: a first ask whose twin is already cached."""

    index: int
    family: str
    question: str
    variant: Variant
    expect: Expect
    lookalike: bool = False


F = Family
FAMILIES: tuple[Family, ...] = (
    # Ordered by popularity (the workload draws them Zipf-like in this order).
    F("return-kettle", "What is the return window for kettles?",
      "what is the return window for kettles",
      ("What's the return window for a kettle?", "How long do I have to return a kettle?")),
    F("track-order", "How do I track my order?", "how do I track my order",
      ("How can I track my order?", "Where can I track my order?")),
    F("standard-shipping-time", "How long does standard shipping take?",
      "How long does standard shipping take",
      ("How many days does standard shipping take?", "How long does standard delivery take?")),
    F("descale-kettle", "How do I descale my kettle?", "how do i descale my kettle?",
      ("How can I descale my kettle?", "What is the best way to descale a kettle?")),
    F("cancel-after-shipping", "Can I cancel an order after it has shipped?",
      "can I cancel an order after it has shipped",
      ("Is it possible to cancel an order that has already shipped?",)),
    F("blender-warranty", "How long is the warranty on the Vortex blender?",
      "How long is the warranty on the Vortex blender ?",
      ("How long is the Vortex blender's warranty?",
       "What warranty does the Vortex blender come with?")),
    F("gift-card-expiry", "Do gift cards expire?", "do gift cards expire",
      ("Does a gift card ever expire?", "Is there an expiry date on gift cards?")),
    F("paypal", "Can I pay with PayPal?", "can I pay with PayPal", ("Do you accept PayPal?",)),
    F("saturday-hours", "What are your store hours on Saturday?",
      "what are your store hours on Saturday",
      ("When are your stores open on Saturday?",)),
    F("express-free", "Is express shipping free?", "is express shipping free",
      ("Is there a charge for express shipping?",)),
    F("ship-canada", "Do you ship to Canada?", "do you ship to Canada?",
      ("Do you deliver to Canada?", "Can you ship my order to Canada?")),
    F("fryer-basket-dishwasher", "Is the Halo air fryer basket dishwasher safe?",
      "is the Halo air fryer basket dishwasher safe",
      ("Can the Halo air fryer basket go in the dishwasher?",)),
    F("student-discount", "Do you offer a student discount?", "do you offer a student discount",
      ("Is there a student discount?",)),
    F("return-opened-blender", "Can I return an opened blender?",
      "can I return an opened blender",
      ("Can I return a blender I have opened?",)),
    F("price-match-amazon", "Do you price match Amazon?", "do you price match Amazon",
      ("Will you match Amazon's price?",)),
    F("toaster-defrost", "Does the Crisp toaster have a defrost setting?",
      "does the Crisp toaster have a defrost setting",
      ("Does the Crisp toaster have a defrost function?",)),
    F("kettle-capacity", "What is the capacity of the Aura kettle?",
      "what is the capacity of the Aura kettle",
      ("How much water does the Aura kettle hold?",)),
    F("rewards-points", "How many points do I earn per dollar spent?",
      "how many points do I earn per dollar spent",
      ("How many reward points do I get per dollar?",)),
    F("recall", "Which Brew coffee makers are affected by the recall?",
      "which Brew coffee makers are affected by the recall",
      ("Which Brew coffee makers are part of the recall?",)),
    F("support-phone", "What is the customer support phone number?",
      "what is the customer support phone number",
      ("What number do I call for customer support?",)),
    # Look-alikes: one word, name, number or direction away from a family above.
    F("return-toaster", "What is the return window for toasters?",
      "what is the return window for toasters", ("How long do I have to return a toaster?",),
      twin="return-kettle"),
    F("cancel-before-shipping", "Can I cancel an order before it has shipped?",
      "can I cancel an order before it has shipped", twin="cancel-after-shipping"),
    F("sunday-hours", "What are your store hours on Sunday?",
      "what are your store hours on Sunday", twin="saturday-hours"),
    F("blender-jar-warranty", "How long is the warranty on the Vortex blender jar?",
      "how long is the warranty on the Vortex blender jar", twin="blender-warranty"),
    F("return-unopened-blender", "Can I return an unopened blender?",
      "can I return an unopened blender", twin="return-opened-blender"),
    F("express-time", "How long does express shipping take?",
      "how long does express shipping take", twin="standard-shipping-time"),
    F("standard-free", "Is standard shipping free?", "is standard shipping free",
      twin="express-free"),
    F("descale-coffee-maker", "How do I descale my coffee maker?",
      "how do I descale my coffee maker", twin="descale-kettle"),
    F("klarna", "Can I pay with Klarna?", "can I pay with Klarna", twin="paypal"),
    F("ship-australia", "Do you ship to Australia?", "do you ship to Australia",
      twin="ship-canada"),
    F("price-match-walmart", "Do you price match Walmart?", "do you price match Walmart",
      twin="price-match-amazon"),
    F("military-discount", "Do you offer a military discount?",
      "do you offer a military discount", twin="student-discount"),
    F("blender-jar-dishwasher", "Is the Vortex blender jar dishwasher safe?",
      "is the Vortex blender jar dishwasher safe", twin="fryer-basket-dishwasher"),
    F("toaster-bagel", "Does the Crisp toaster have a bagel setting?",
      "does the Crisp toaster have a bagel setting", twin="toaster-defrost"),
)
BY_ID = {f.id: f for f in FAMILIES}
FAQ = tuple(BY_ID[i].question for i in ("return-kettle", "track-order", "gift-card-expiry",
                                        "descale-kettle", "support-phone"))
"""The help centre's FAQ page: warmed before the first user asks."""


def _variant(rng: random.Random, fam: Family, first: bool) -> tuple[str, Variant]:
    if first:
        return fam.question, "original"
    r = rng.random()
    if r < 0.45 or (r >= 0.65 and not fam.paraphrases):
        return fam.question, "repeat"
    if r < 0.65:
        return fam.lexical, "lexical"
    return rng.choice(fam.paraphrases), "paraphrase"


def build_workload(n: int, seed: int = 7, warmed: tuple[str, ...] = ()) -> list[Ask]:
    """``n`` asks: popular questions repeat (exactly, lexically or paraphrased),
    and look-alikes of answered questions arrive spread over the run.  ``warmed``:
    questions in the cache before the first ask."""
    if n < 1:
        raise ValueError("the workload needs at least one question")
    rng = random.Random(seed)
    base = [f for f in FAMILIES if f.twin is None]
    looks = [f for f in FAMILIES if f.twin is not None][: max(2, n // 7)]
    # Look-alikes arrive from a quarter of the way in, evenly spaced.
    due = {f.id: int(n * (0.25 + 0.7 * i / len(looks))) for i, f in enumerate(looks)}
    pending = list(looks)
    pool = list(base)
    weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(base))]
    asked: dict[str, set[str]] = {}
    seen_in_run: set[str] = set()  # a family's first ask in the run is its original
    for text in warmed:
        fam_id = next(f.id for f in FAMILIES if f.question == text)
        asked.setdefault(fam_id, set()).add(canonicalize(text))
    out: list[Ask] = []
    while len(out) < n:
        i = len(out)
        fam: Family
        if pending and due[pending[0].id] <= i:
            look = pending[0]
            assert look.twin is not None
            # The twin must be cached for the look-alike to test anything.
            fam = look if look.twin in asked else BY_ID[look.twin]
            if fam is look:
                pending.pop(0)
                pool.append(look)
                weights.append(weights[-1])
        else:
            fam = rng.choices(pool, weights)[0]
        text, variant = _variant(rng, fam, fam.id not in seen_in_run)
        seen_in_run.add(fam.id)
        canon = canonicalize(text)
        seen = asked.get(fam.id)
        expect: Expect = ("miss" if seen is None else "exact" if canon in seen
                          else "paraphrase")
        lookalike = expect == "miss" and fam.twin is not None and fam.twin in asked
        out.append(Ask(i, fam.id, text, variant, expect, lookalike))
        asked.setdefault(fam.id, set()).add(canon)
    return out
