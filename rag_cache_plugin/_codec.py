"""The one serializer: JSON in a versioned envelope, optionally signed or encrypted.

No pickle anywhere: a writable Redis or SQLite file must never become code
execution.  The envelope binds the entry key (in the MAC or the AEAD data and in
the body), so a valid payload copied under another key is rejected.

Layout (bytes)::

    RC1 -\n<json>                        plain
    RC1 S <kid> <hmac-sha256 hex>\n<json>  signed
    RC1 E <kid>\n<nonce><ciphertext+tag>   AES-GCM encrypted (also authenticated)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import orjson

from ._entry import Entry
from ._errors import ConfigError, CorruptEntryError, SignatureError

__all__ = ["Codec", "derive_key", "loads", "needs_exact_parse", "value_digest"]

_MAGIC = b"RC1 "
_PRIMITIVES = (str, int, float, bool, type(None))
_VERSION = 1


def derive_key(secret: str) -> bytes:
    """Key bytes from configuration: hex of 16/24/32 bytes is used as is, any other
    text is hashed to 32 bytes (use a high-entropy secret)."""
    try:
        raw = bytes.fromhex(secret)
        if len(raw) in (16, 24, 32):
            return raw
    except ValueError:
        pass
    if not secret:
        raise ConfigError("empty key")
    return hashlib.sha256(secret.encode("utf-8")).digest()


def loads(data: bytes | str) -> Any:
    """Parse JSON fast (orjson) on the read path.  What orjson refuses but the encoder
    may write (NaN, escaped lone surrogates) goes to the stdlib parser.  Integers
    beyond 64 bits orjson does *not* refuse: it silently turns them into floats, so
    the encoder marks bodies holding them (see ``needs_exact_parse``)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def needs_exact_parse(value: Any) -> bool:
    """Would orjson fail to read ``value`` back exactly?  True for integers beyond
    64 bits (read back as floats) and, conservatively, for anything else orjson
    cannot write (it takes the stdlib path on reading anyway)."""
    try:
        orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return True
    return False


def value_digest(value: Any) -> str:
    """A short hash of a JSON value, independent of key order."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # NaN, huge integers: the stdlib writes them
        text = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(text, digest_size=8).hexdigest()


_UNREAD: Any = object()


def _kid(key: bytes) -> bytes:
    return hashlib.sha256(b"rag-cache-kid" + key).hexdigest()[:8].encode("ascii")


class Codec:
    """Encodes entries to bytes and back; ``decode`` raises ``CodecError`` subclasses."""

    def __init__(
        self,
        signing_keys: Sequence[bytes] = (),
        encryption_keys: Sequence[bytes] = (),
        *,
        require_signature: bool = False,
        max_bytes: int | None = None,
    ) -> None:
        self._max_bytes = max_bytes
        self._sign = [(_kid(k), k) for k in signing_keys]
        self._sign_by_kid = dict(self._sign)
        self._aead: list[tuple[bytes, Any]] = []
        if encryption_keys:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            for k in encryption_keys:
                if len(k) not in (16, 24, 32):
                    raise ConfigError("AES-GCM keys must be 16, 24 or 32 bytes")
                self._aead.append((_kid(k), AESGCM(k)))
        self._aead_by_kid = dict(self._aead)
        # Unsigned plaintext is refused once any protection is configured and required.
        self._require = require_signature or bool(self._aead)

    # -- encoding -----------------------------------------------------------------

    def body(self, entry: Entry) -> bytes:
        """JSON body of an entry; raises ValueError if the value is not JSON data."""
        return self._body(entry)[0]

    def _body(self, entry: Entry) -> tuple[bytes, Any]:
        """(body, the value as read back from it, or ``_UNREAD``)."""
        doc = {
            "v": _VERSION,
            "k": entry.key,
            "ns": entry.namespace,
            "p": entry.partition,
            "q": entry.question,
            "c": entry.created,
            "x": entry.expires,
            "t": list(entry.tags),
            "val": entry.value,
        }
        if entry.vector is not None:
            doc["vec"] = base64.b64encode(entry.vector).decode("ascii")
        # orjson first, kept only when the value reads back equal: what it writes but
        # the stdlib refuses (dataclasses, datetimes, UUIDs), or changes (NaN to null,
        # tuples to lists), never compares equal and takes the stdlib path below.
        try:
            fast = orjson.dumps(doc)
            back = orjson.loads(fast)["val"]
        except (orjson.JSONEncodeError, orjson.JSONDecodeError, TypeError):
            pass
        else:
            if type(back) is type(entry.value) and back == entry.value:
                return fast, back
        if needs_exact_parse(entry.value):
            # A NaN orjson refuses: the reader then uses the exact stdlib parser.
            doc["exact"] = math.nan
        try:
            # ensure_ascii: lone surrogates and NUL survive as escapes, output is ASCII.
            text = json.dumps(doc, separators=(",", ":"), check_circular=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"cache values must be JSON data: {exc}") from exc
        return text.encode("ascii"), _UNREAD

    def encode(self, entry: Entry, *, normalize: bool = False) -> bytes:
        """Encode and remember the payload on ``entry.raw``.  With ``normalize`` the
        entry's value becomes its JSON round trip (tuples turn into lists...), so L1
        returns exactly what L2 and L3 will."""
        body, back = self._body(entry)
        if normalize and not isinstance(entry.value, _PRIMITIVES):
            entry.value = back if back is not _UNREAD else loads(body)["val"]
        key = entry.key.encode("ascii")
        if self._aead:
            kid, aead = self._aead[0]
            nonce = os.urandom(12)
            sealed: bytes = aead.encrypt(nonce, body, key)
            raw = _MAGIC + b"E " + kid + b"\n" + nonce + sealed
        elif self._sign:
            kid, secret = self._sign[0]
            mac = hmac.new(secret, key + b"\n" + body, hashlib.sha256).hexdigest().encode()
            raw = _MAGIC + b"S " + kid + b" " + mac + b"\n" + body
        else:
            raw = _MAGIC + b"-\n" + body
        entry.raw = raw
        return raw

    # -- decoding -----------------------------------------------------------------

    def decode(self, raw: bytes, expected_key: str) -> Entry:
        """Decode a payload read for ``expected_key``."""
        if type(raw) is not bytes:
            if not isinstance(raw, (bytes, bytearray, memoryview)):
                raise CorruptEntryError("payload is not bytes")
            raw = bytes(raw)
        if self._max_bytes is not None and len(raw) > self._max_bytes:
            # Nothing this configuration writes is that big: a planted or foreign
            # payload, refused before it is parsed or kept in memory any longer.
            raise CorruptEntryError(f"payload of {len(raw)} bytes exceeds max_entry_bytes")
        head, sep, rest = raw.partition(b"\n")
        if not sep or not head.startswith(_MAGIC):
            raise CorruptEntryError("not a rag-cache payload")
        parts = head[len(_MAGIC) :].split(b" ")
        mode = parts[0]
        if mode == b"-":
            if self._require or self._sign:
                raise SignatureError("unsigned entry where signatures are required")
            body = rest
            entry = self._parse(body, expected_key)
            entry.raw = raw
            return entry
        key = expected_key.encode("ascii")
        if mode == b"S" and len(parts) == 3:
            secret = self._sign_by_kid.get(parts[1])
            if secret is None:
                raise SignatureError("entry signed with an unknown key")
            mac = hmac.new(secret, key + b"\n" + rest, hashlib.sha256).hexdigest().encode()
            if not hmac.compare_digest(mac, parts[2]):
                raise SignatureError("bad signature")
            body = rest
        elif mode == b"E" and len(parts) == 2:
            aead = self._aead_by_kid.get(parts[1])
            if aead is None or len(rest) < 28:
                raise SignatureError("entry encrypted with an unknown key")
            from cryptography.exceptions import InvalidTag

            try:
                body = aead.decrypt(rest[:12], rest[12:], key)
            except InvalidTag as exc:
                raise SignatureError("entry fails authentication") from exc
        else:
            raise CorruptEntryError("unknown envelope")
        entry = self._parse(body, expected_key)
        entry.raw = raw
        return entry

    @staticmethod
    def _parse(body: bytes, expected_key: str) -> Entry:
        try:
            doc = loads(body)
        except (ValueError, RecursionError) as exc:
            raise CorruptEntryError(f"bad JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("v") != _VERSION:
            raise CorruptEntryError("wrong shape or version")
        try:
            key, ns, part, q = doc["k"], doc["ns"], doc["p"], doc["q"]
            created, expires, tags, value = doc["c"], doc["x"], doc["t"], doc["val"]
        except KeyError as exc:
            raise CorruptEntryError(f"missing field {exc}") from exc
        if key != expected_key:
            raise CorruptEntryError("payload belongs to another key")
        if not (
            type(ns) is str
            and type(part) is str
            and type(q) is str
            and isinstance(created, (int, float))
            and (expires is None or isinstance(expires, (int, float)))
            and type(tags) is list
            and all(type(t) is str for t in tags)
        ):
            raise CorruptEntryError("wrong field types")
        vec = doc.get("vec")
        vector = None
        if vec is not None:
            try:
                vector = base64.b64decode(vec, validate=True)
            except (ValueError, TypeError) as exc:
                raise CorruptEntryError("bad vector") from exc
        return Entry(key, ns, part, q, value, float(created),
                     None if expires is None else float(expires), tuple(tags), vector)
