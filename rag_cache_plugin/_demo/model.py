"""A deterministic local chat model: it answers from the context in its system
prompt (the sentences that share the most words with the question), reports the
token usage a hosted model would, and takes a hosted model's time, scaled down."""

from __future__ import annotations

import re
import time
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

__all__ = ["HOSTED_BASE", "HOSTED_PER_TOKEN", "MODEL_NAME", "LocalChatModel", "count_tokens"]

MODEL_NAME = "brightwell-sim-1"
HOSTED_BASE = 0.5
"""Seconds before the first token of a hosted model of the gpt-4o class."""
HOSTED_PER_TOKEN = 0.015
"""Seconds per output token of that model."""
NOT_FOUND = "I could not find that in the Brightwell help centre; please contact support."

_TOKEN = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_STOP = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "come", "comes", "do", "does",
    "ever", "for", "from", "get", "have", "how", "i", "in", "is", "it", "its", "my", "of",
    "on", "or", "our", "possible", "the", "there", "to", "was", "what", "when", "where",
    "which", "who", "why", "will", "with", "you", "your",
))


def count_tokens(text: str) -> int:
    """About what a BPE tokenizer counts for English: words, numbers and punctuation,
    plus one more for every 6 letters past the first 6 of a long word."""
    return sum(1 + max(len(t) - 6, 0) // 6 for t in _TOKEN.findall(text))


def _stem(word: str) -> str:
    # Enough for the help centre: "kettles"/"kettle", "returned"/"return", "shipped"/"ship".
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        word = word[:-1]
    for suffix in ("ing", "ed"):
        if word.endswith(suffix) and len(word) > len(suffix) + 3:
            word = word[: -len(suffix)]
            if word[-1] == word[-2] and word[-1] not in "aeiouls":
                word = word[:-1]
            break
    return word


def _terms(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower())
            if w not in _STOP and (len(w) > 1 or w.isdigit())}


def answer_from(context: str, question: str) -> str:
    """The context sentence sharing the most terms with ``question`` (ties: the
    rarer terms, then the earlier sentence), and the runner-up if it shares as many."""
    parts = [p.strip(" -#\t") for p in _SENTENCE.split(context)]
    parts = [p for p in parts if p and not p.startswith("[")]
    terms = [_terms(p) for p in parts]
    df: dict[str, int] = {}
    for ts in terms:
        for t in ts:
            df[t] = df.get(t, 0) + 1
    wanted = _terms(question)
    scores = [(len(wanted & ts), sum(1 / df[t] for t in wanted & ts)) for ts in terms]
    ranked = sorted(range(len(parts)), key=lambda i: (-scores[i][0], -scores[i][1], i))[:2]
    if not ranked or scores[ranked[0]][0] == 0:
        return NOT_FOUND
    best = scores[ranked[0]][0]
    return " ".join(parts[i] for i in sorted(i for i in ranked if scores[i][0] == best))


class LocalChatModel(BaseChatModel):
    """No network, no API key: reads the context block of the system message and the
    last human message.  ``latency_scale`` multiplies a hosted model's latency
    (``HOSTED_BASE`` + ``HOSTED_PER_TOKEN`` per output token); 0 answers at once."""

    model_name: str = MODEL_NAME
    latency_scale: float = 0.25
    _calls: int = PrivateAttr(default=0)

    @property
    def calls(self) -> int:
        """How often the model itself ran (cache hits never reach it)."""
        return self._calls

    @property
    def _llm_type(self) -> str:
        return "brightwell-local-sim"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        # Only what changes answers partitions the cache (not the latency).
        return {"model_name": self.model_name}

    def simulated_latency(self, output_tokens: int) -> float:
        return self.latency_scale * (HOSTED_BASE + HOSTED_PER_TOKEN * output_tokens)

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        self._calls += 1
        # The system message's first paragraph is the instruction; the rest, the articles.
        context = "\n".join(str(m.content).split("\n\n", 1)[-1]
                            for m in messages if m.type == "system")
        question = next((str(m.content) for m in reversed(messages) if m.type == "human"), "")
        text = answer_from(context, question)
        # 4 tokens of chat framing per message, as OpenAI's models count them.
        tin = sum(count_tokens(str(m.content)) + 4 for m in messages) + 3
        tout = count_tokens(text)
        time.sleep(self.simulated_latency(tout))
        message = AIMessage(
            text, response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
            usage_metadata={"input_tokens": tin, "output_tokens": tout,
                            "total_tokens": tin + tout})
        return ChatResult(generations=[ChatGeneration(message=message)],
                          llm_output={"model_name": self.model_name})
