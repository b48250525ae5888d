"""Lexical canonicalization of questions and derivation of partition and entry keys.

Canonicalization folds what never changes meaning (Unicode forms, case, spacing,
sentence punctuation) and keeps every word and every meaningful symbol: "C++" and
"C" stay different, "1 + 1" and "1 - 1" stay different.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = ["KeyMaker", "canonicalize"]

# Punctuation that only frames words.  Stripped from the edges of a token, never
# from inside it ("node.js", "3.14", "U.S." keep their dots).
_SOFT = ".,;:!?¿¡\"'«»()[]{}…"
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
        "\u2015": "-", "\u2212": "-",
    }
)
_SPACE = re.compile(r"\s+")


def canonicalize(text: str) -> str:
    """Return the canonical form of a question: NFKC, casefolded, spacing and framing
    punctuation folded.  Words are never dropped."""
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE).casefold()
    out: list[str] = []
    for token in _SPACE.split(text):
        token = token.strip(_SOFT)
        if token:
            out.append(token)
    return " ".join(out)


def _field(data: str) -> bytes:
    # Length-prefixed so ("ab", "c") and ("a", "bc") never collide.
    raw = data.encode("utf-8", "surrogatepass")
    return len(raw).to_bytes(8, "little") + raw


class KeyMaker:
    """Derives partition and entry keys with a keyed BLAKE2b (128-bit digests).

    Without a secret the key is a fixed, public personalisation: keys are stable
    across processes.  With a secret, keys cannot be predicted without it.
    """

    __slots__ = ("_key",)

    def __init__(self, secret: bytes | None = None) -> None:
        self._key = hashlib.blake2b(secret or b"rag-cache-plugin/v1", digest_size=32).digest()

    def _hash(self, *parts: str) -> str:
        h = hashlib.blake2b(key=self._key, digest_size=16)
        for part in parts:
            h.update(_field(part))
        return h.hexdigest()

    def namespace(self, namespace: str) -> str:
        """Short, key-safe id of a namespace (tenant)."""
        return self._hash("ns", namespace)[:16]

    def partition(self, namespace: str, llm_string: str, context: str) -> str:
        """Everything that is not the question: tenant, model settings, context."""
        return self._hash("p", namespace, llm_string, context)

    def entry(self, partition: str, canonical_question: str) -> str:
        return self._hash("e", partition, canonical_question)

    def tag(self, namespace: str, tag: str) -> str:
        return self._hash("t", namespace, tag)
