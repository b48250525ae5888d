"""What a model call costs: a price table per model, input and output priced apart.

``DEFAULT_PRICES`` are the providers' published list prices in US dollars per
million tokens as of ``PRICES_AS_OF``.  Prices change; pass your own table (or
``PriceTable(extra, defaults=True)`` to add to these) for numbers you can trust.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_PRICES", "PRICES_AS_OF", "ModelPrice", "PriceTable"]

PRICES_AS_OF = "2025-06-01"


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """US dollars per million input and per million output tokens."""

    input: float
    output: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    # OpenAI
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4o-mini": ModelPrice(0.15, 0.60),
    "gpt-4.1": ModelPrice(2.00, 8.00),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40),
    "gpt-4-turbo": ModelPrice(10.00, 30.00),
    "gpt-4": ModelPrice(30.00, 60.00),
    "gpt-3.5-turbo": ModelPrice(0.50, 1.50),
    "o1": ModelPrice(15.00, 60.00),
    "o1-mini": ModelPrice(1.10, 4.40),
    "o3": ModelPrice(2.00, 8.00),
    "o3-mini": ModelPrice(1.10, 4.40),
    "o4-mini": ModelPrice(1.10, 4.40),
    "text-embedding-3-small": ModelPrice(0.02, 0.0),
    "text-embedding-3-large": ModelPrice(0.13, 0.0),
    # Anthropic
    "claude-opus-4": ModelPrice(15.00, 75.00),
    "claude-sonnet-4": ModelPrice(3.00, 15.00),
    "claude-3-7-sonnet": ModelPrice(3.00, 15.00),
    "claude-3-5-sonnet": ModelPrice(3.00, 15.00),
    "claude-3-5-haiku": ModelPrice(0.80, 4.00),
    "claude-3-opus": ModelPrice(15.00, 75.00),
    "claude-3-haiku": ModelPrice(0.25, 1.25),
    # Google (prompts up to 128k/200k tokens)
    "gemini-2.5-pro": ModelPrice(1.25, 10.00),
    "gemini-2.5-flash": ModelPrice(0.30, 2.50),
    "gemini-2.0-flash": ModelPrice(0.10, 0.40),
    "gemini-1.5-pro": ModelPrice(1.25, 5.00),
    "gemini-1.5-flash": ModelPrice(0.075, 0.30),
    # Mistral
    "mistral-large": ModelPrice(2.00, 6.00),
    "mistral-small": ModelPrice(0.10, 0.30),
}

PriceLike = ModelPrice | tuple[float, float] | Mapping[str, float]


def _price(value: PriceLike) -> ModelPrice:
    if isinstance(value, ModelPrice):
        return value
    if isinstance(value, Mapping):
        return ModelPrice(float(value["input"]), float(value["output"]))
    inp, out = value
    return ModelPrice(float(inp), float(out))


class PriceTable:
    """Model name -> price.  A name matches exactly, else by its longest listed prefix
    ("gpt-4o-mini-2024-07-18" is "gpt-4o-mini"), after dropping a provider path
    ("openai/gpt-4o", "models/gemini-1.5-pro").  Unknown models cost nothing."""

    def __init__(self, prices: Mapping[str, PriceLike] | None = None, *,
                 defaults: bool | None = None) -> None:
        use_defaults = prices is None if defaults is None else defaults
        table: dict[str, ModelPrice] = dict(DEFAULT_PRICES) if use_defaults else {}
        for name, value in (prices or {}).items():
            table[name.lower()] = _price(value)
        self._table = table
        # Resolution is memoized: names seen in production are few.
        self._resolved: dict[str, ModelPrice | None] = {}

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.lookup(model) is not None

    def as_dict(self) -> dict[str, tuple[float, float]]:
        return {k: (v.input, v.output) for k, v in sorted(self._table.items())}

    def lookup(self, model: str) -> ModelPrice | None:
        try:
            return self._resolved[model]
        except KeyError:
            pass
        name = model.lower().rsplit("/", 1)[-1].strip()
        found = self._table.get(name)
        if found is None:
            best = ""
            for prefix in self._table:
                if name.startswith(prefix) and len(prefix) > len(best):
                    best = prefix
            found = self._table[best] if best else None
        if len(self._resolved) < 4096:
            self._resolved[model] = found
        return found

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """Dollars for one call, or None when the model has no price."""
        price = self.lookup(model)
        return None if price is None else price.cost(input_tokens, output_tokens)
