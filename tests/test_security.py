"""Security: no code execution from stored data, tenant isolation, signed and encrypted
entries with key rotation, and keys that cannot be predicted without the secret."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rag_cache_plugin import CacheConfig, Corrupt, EventBus, RagCache, RedisConfig, TierFailed
from rag_cache_plugin._keys import KeyMaker

ROOT = Path(__file__).resolve().parents[1]

# -- no pickle, eval, exec, marshal or unsafe YAML in any distribution -------------------

BANNED_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve",
                  "jsonpickle"}
BANNED_BUILTINS = {"eval", "exec", "compile", "__import__"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
LC_LOADERS = {"loads", "load"}


def distribution_sources() -> list[Path]:
    """Every module shipped by a distribution: the core and each integration (their
    tests are not shipped)."""
    files = sorted((ROOT / "rag_cache_plugin").rglob("*.py"))
    for project in sorted((ROOT / "integrations").glob("*/pyproject.toml")):
        files += sorted(p for p in project.parent.rglob("*.py")
                        if "tests" not in p.relative_to(project.parent).parts)
    return files


@dataclass
class _Scanner(ast.NodeVisitor):
    """Finds what would let stored data run code."""

    where: str
    found: list[str]

    def __post_init__(self) -> None:
        self.lc_names: set[str] = set()  # local names bound to langchain load/loads
        self.lc_modules: set[str] = set()  # local names bound to langchain_core.load

    def _flag(self, node: ast.AST, what: str) -> None:
        self.found.append(f"{self.where}:{getattr(node, 'lineno', '?')}: {what}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in BANNED_MODULES:
                self._flag(node, f"import {alias.name}")
            if alias.name in ("langchain_core.load", "langchain.load"):
                self.lc_modules.add(alias.asname or alias.name)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = node.module or ""
        if mod.split(".")[0] in BANNED_MODULES:
            self._flag(node, f"from {mod} import ...")
        for alias in node.names:
            if mod in ("langchain_core.load", "langchain.load", "langchain_core.load.load") \
                    and alias.name in LC_LOADERS:
                self.lc_names.add(alias.asname or alias.name)
            if mod in ("langchain_core", "langchain") and alias.name == "load":
                self.lc_modules.add(alias.asname or alias.name)
            if mod == "builtins" and alias.name in BANNED_BUILTINS:
                self._flag(node, f"from builtins import {alias.name}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        kwargs = {k.arg: k.value for k in node.keywords if k.arg}
        if isinstance(f, ast.Name) and f.id in BANNED_BUILTINS:
            self._flag(node, f"{f.id}()")
        if isinstance(f, ast.Attribute):
            base = f.value.id if isinstance(f.value, ast.Name) else ""
            if base == "builtins" and f.attr in BANNED_BUILTINS:
                self._flag(node, f"builtins.{f.attr}()")
            if base == "yaml" and f.attr in ("unsafe_load", "unsafe_load_all", "full_load",
                                             "full_load_all"):
                self._flag(node, f"yaml.{f.attr}()")
            if base == "yaml" and f.attr in ("load", "load_all"):
                loader = kwargs.get("Loader") or (node.args[1] if len(node.args) > 1 else None)
                name = (loader.attr if isinstance(loader, ast.Attribute)
                        else loader.id if isinstance(loader, ast.Name) else None)
                if name not in SAFE_YAML_LOADERS:
                    self._flag(node, f"yaml.{f.attr}() without a safe Loader")
            if f.attr in ("read_pickle", "unsafe_load"):
                self._flag(node, f".{f.attr}()")
            if base in self.lc_modules and f.attr in LC_LOADERS:
                self._check_lc(node, kwargs, f"{base}.{f.attr}")
        if isinstance(f, ast.Name) and f.id in self.lc_names:
            self._check_lc(node, kwargs, f.id)
        allow = kwargs.get("allow_pickle")
        if isinstance(allow, ast.Constant) and allow.value is True:
            self._flag(node, "allow_pickle=True")
        self.generic_visit(node)

    def _check_lc(self, node: ast.Call, kwargs: dict[str, ast.expr], name: str) -> None:
        """LangChain revival must name its allow-list of classes."""
        allowed = kwargs.get("allowed_objects")
        if allowed is None:
            self._flag(node, f"{name}() without allowed_objects=")
        elif isinstance(allowed, ast.Constant) and allowed.value == "all":
            self._flag(node, f"{name}(allowed_objects='all')")
        secrets = kwargs.get("secrets_from_env")
        if isinstance(secrets, ast.Constant) and secrets.value is True:
            self._flag(node, f"{name}(secrets_from_env=True)")


def scan(source: str, where: str = "<src>") -> list[str]:
    found: list[str] = []
    _Scanner(where, found).visit(ast.parse(source))
    return found


BAD_SNIPPETS = {
    "import pickle": "import pickle\npickle.loads(b'')",
    "from pickle": "from pickle import loads",
    "marshal": "import marshal",
    "shelve": "import shelve as s",
    "eval": "eval('1')",
    "exec": "exec('x = 1')",
    "compile": "compile('1', 'f', 'eval')",
    "__import__": "__import__('os')",
    "builtins.eval": "import builtins\nbuiltins.eval('1')",
    "yaml.load bare": "import yaml\nyaml.load(s)",
    "yaml.load Loader": "import yaml\nyaml.load(s, Loader=yaml.Loader)",
    "yaml.load FullLoader": "import yaml\nyaml.load(s, yaml.FullLoader)",
    "yaml.unsafe_load": "import yaml\nyaml.unsafe_load(s)",
    "yaml.full_load": "import yaml\nyaml.full_load(s)",
    "lc loads no allow-list": "from langchain_core.load import loads\nloads(s)",
    "lc loads all": "from langchain_core.load import loads\nloads(s, allowed_objects='all')",
    "lc load module": "from langchain_core import load\nload.loads(s)",
    "lc load alias": "from langchain_core.load import load as revive\nrevive(d)",
    "lc secrets": ("from langchain_core.load import loads\n"
                   "loads(s, allowed_objects=[A], secrets_from_env=True)"),
    "numpy pickle": "import numpy as np\nnp.load(f, allow_pickle=True)",
    "pandas pickle": "import pandas as pd\npd.read_pickle(f)",
}
GOOD_SNIPPETS = {
    "safe yaml": "import yaml\nyaml.safe_load(s)\nyaml.load(s, Loader=yaml.SafeLoader)",
    "lc allow-list": "from langchain_core.load import loads\nloads(s, allowed_objects=[AIMessage])",
    "re.compile": "import re\nre.compile('x')",
    "json": "import json\njson.loads(s)",
}


@pytest.mark.parametrize("name", list(BAD_SNIPPETS))
def test_scanner_catches(name: str) -> None:
    assert scan(BAD_SNIPPETS[name]), f"the scanner missed: {name}"


@pytest.mark.parametrize("name", list(GOOD_SNIPPETS))
def test_scanner_allows(name: str) -> None:
    assert scan(GOOD_SNIPPETS[name]) == []


def test_no_code_execution_paths_in_any_distribution(figures: Callable[..., str]) -> None:
    files = distribution_sources()
    found: list[str] = []
    lines = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        lines += text.count("\n")
        found += scan(text, str(path.relative_to(ROOT)))
    dists = ["rag_cache_plugin", *(p.parent.name for p in (ROOT / "integrations").glob(
        "*/pyproject.toml"))]
    figures("source-scan", distributions=dists, files=len(files), lines=lines,
            findings=len(found))
    assert len(files) > 10
    assert found == []


# -- tenant isolation -------------------------------------------------------------------

SUBJECTS = ["my password", "the router", "a refund", "two-factor login", "the invoice",
            "my subscription", "the VPN client", "a shared folder", "the API token",
            "my email alias", "the printer", "dark mode", "a team member", "the backup",
            "my profile photo", "the billing address", "an order", "the mobile app",
            "a calendar invite", "the audit log"]
VERBS = ["reset", "change", "cancel", "enable", "disable", "export", "update", "restore",
         "delete", "share"]
WHENS = ["", " today", " on Windows", " on a phone", " without admin rights",
         " for my whole team", " after it expired", " in bulk", " from the web console", " again"]


def questions() -> list[str]:
    """2,000 distinct questions."""
    return [f"How do I {v} {s}{w}?" for s in SUBJECTS for v in VERBS for w in WHENS]


def variants(q: str) -> list[str]:
    """The same question as other users type it: lexical variants (one key within a
    namespace) and a paraphrase (what semantic matching would catch)."""
    body = q[:-1]
    return [q, body.upper(), f"  {body.lower()} ?! ", body.replace("How do I", "How can I") + "?"]


@pytest.fixture(params=["l1", "l2", "l3", "l3-cluster"])
def tier_config(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, CacheConfig]:
    """One tier at a time (L1 off where a lower tier is under test)."""
    kind = request.param
    if kind == "l1":
        return kind, CacheConfig()
    if kind == "l2":
        return kind, CacheConfig(sqlite_path=tmp_path / "c.db", l1_max_entries=0)
    url = request.getfixturevalue("redis_url" if kind == "l3" else "cluster_url")
    return kind, CacheConfig(redis=RedisConfig(url=url), l1_max_entries=0)


def test_tenants_never_see_each_other(tier_config: tuple[str, CacheConfig],
                                      figures: Callable[..., str]) -> None:
    kind, cfg = tier_config
    qs = questions()
    bus, seen = EventBus(), list[Any]()
    bus.subscribe(seen.append, (TierFailed, Corrupt))
    t = time.perf_counter()
    # One instance serves both tenants (L1 is per instance; L2 and L3 are shared anyway).
    with RagCache(cfg, bus=bus) as a_cache:
        b_cache = a_cache
        for i, q in enumerate(qs):
            assert a_cache.store(q, {"tenant": "A", "i": i}, namespace="tenant-A", tags=["doc"])
        # The tier itself holds nothing under B's keys.
        tier = {"l1": a_cache.l1, "l2": a_cache.l2}.get(kind, a_cache.l3)
        assert tier is not None
        b_refs = [b_cache.ref(q, namespace="tenant-B") for q in qs]
        in_tier = tier.get_many(b_refs, time.time())
        a_keys = {a_cache.ref(q, namespace="tenant-A").key for q in qs}
        probes = [v for q in qs for v in variants(q)]
        # Tenant B asks every question, as typed by anyone.
        cross = [h for h in b_cache.lookup_many(probes, namespace="tenant-B") if h is not None]
        # Within A the lexical variants do hit (the probes are not vacuous).
        own = a_cache.lookup_many([v for q in qs[:200] for v in variants(q)[:3]],
                                  namespace="tenant-A")
        # B stores the same questions; neither tenant's answers change.
        for i, q in enumerate(qs):
            b_cache.store(q, {"tenant": "B", "i": i}, namespace="tenant-B", tags=["doc"])
        a_after = a_cache.lookup_many(qs, namespace="tenant-A")
        b_after = b_cache.lookup_many(qs, namespace="tenant-B")
        # Invalidating and clearing B's tag and namespace leaves A alone.
        b_cache.invalidate(tags=["doc"], namespace="tenant-B")
        b_cache.clear(namespace="tenant-B")
        a_still = a_cache.lookup_many(qs[:500], namespace="tenant-A")
    elapsed = time.perf_counter() - t
    figures(f"isolation-{kind}", questions=len(qs), cross_lookups=len(probes),
            cross_hits=len(cross), own_variant_hits=sum(h is not None for h in own),
            a_intact=sum(h is not None and h.value["tenant"] == "A" for h in a_after),
            b_own=sum(h is not None and h.value["tenant"] == "B" for h in b_after),
            a_after_b_cleared=sum(h is not None for h in a_still), seconds=elapsed)
    assert cross == []
    assert all(h is not None for h in own)
    assert all(h is not None and h.value == {"tenant": "A", "i": i} for i, h in enumerate(a_after))
    assert all(h is not None and h.value == {"tenant": "B", "i": i} for i, h in enumerate(b_after))
    assert all(h is not None and h.value["tenant"] == "A" for h in a_still)
    assert in_tier == {}
    assert a_keys.isdisjoint(r.key for r in b_refs)
    assert seen == []


def test_tenants_never_match_semantically(tmp_path: Path, redis_url: str,
                                          figures: Callable[..., str]) -> None:
    if importlib.util.find_spec("rag_cache_plugin._semantic") is None:
        pytest.skip("semantic layer not merged yet")
    import numpy as np

    from rag_cache_plugin import SemanticConfig

    def embed(texts: list[str]) -> Any:
        """Bag of words hashed into 256 dimensions: paraphrases land close together."""
        out = np.zeros((len(texts), 256), dtype="float32")
        for row, text in enumerate(texts):
            for word in text.lower().replace("?", " ").split():
                out[row, int(hashlib.blake2b(word.encode(), digest_size=4).hexdigest(), 16)
                    % 256] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    qs = questions()[:1000]
    # The loosest threshold: if tenants were ever mixed, this would show it.
    sem = SemanticConfig(embedder=embed, threshold=0.0)
    cfg = CacheConfig(sqlite_path=tmp_path / "c.db", redis=RedisConfig(url=redis_url),
                      semantic=sem)
    with RagCache(cfg) as a, RagCache(cfg) as b:
        for i, q in enumerate(qs):
            a.store(q, {"tenant": "A", "i": i}, namespace="tenant-A")
        paraphrases = [variants(q)[3] for q in qs]
        cross = [h for h in b.lookup_many(paraphrases, namespace="tenant-B") if h is not None]
        own = [h for h in a.lookup_many(paraphrases[:200], namespace="tenant-A")
               if h is not None and h.kind == "semantic"]
    figures("isolation-semantic", questions=len(qs), cross_hits=len(cross),
            own_semantic_hits=len(own))
    assert cross == []


# -- signed and encrypted entries, key rotation --------------------------------------------

K1 = "11" * 32  # 32 bytes as hex: AES-256
K2 = "22" * 32
K3 = "33" * 32


@pytest.fixture(params=["l2", "l3", "l3-cluster"])
def shared(request: pytest.FixtureRequest,
           tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Where entries rest: an L2 file, or L3 on a standalone server or a cluster."""
    kind = request.param
    if kind == "l2":
        yield kind, {"sqlite_path": tmp_path / "c.db", "l1_max_entries": 0}
    else:
        url = request.getfixturevalue("redis_url" if kind == "l3" else "cluster_url")
        yield kind, {"redis": RedisConfig(url=url), "l1_max_entries": 0}


def raw_of(cache: RagCache, q: str) -> bytes:
    ref = cache.ref(q)
    if cache.l2 is not None:
        row = cache.l2._conn().execute("SELECT value FROM entries WHERE key = ?", (ref.key,))
        found = row.fetchone()
        return bytes(found[0]) if found else b""
    assert cache.l3 is not None
    return cache.l3.client.get(cache.l3.data_key(ref)) or b""  # type: ignore[return-value]


def put_raw(cache: RagCache, q: str, raw: bytes) -> None:
    ref = cache.ref(q)
    if cache.l2 is not None:
        with cache.l2._write() as conn:
            conn.execute("UPDATE entries SET value = ? WHERE key = ?", (raw, ref.key))
    else:
        assert cache.l3 is not None
        cache.l3.client.set(cache.l3.data_key(ref), raw)


def header(raw: bytes) -> bytes:
    return raw.split(b"\n", 1)[0]


def kid(raw: bytes) -> bytes:
    """The id of the key an entry was written under (``RC1 E|S <kid> ...``)."""
    parts = header(raw).split(b" ")
    return parts[2] if len(parts) > 2 else b""


def corrupt_events() -> tuple[EventBus, list[Corrupt]]:
    bus, seen = EventBus(), list[Any]()
    bus.subscribe(seen.append, (Corrupt,))
    return bus, seen


@pytest.mark.parametrize("mode", ["encryption_keys", "signing_keys"])
def test_protected_entries_and_key_rotation(shared: tuple[str, dict[str, Any]], mode: str,
                                            figures: Callable[..., str]) -> None:
    kind, shared_cfg = shared
    encrypt = mode == "encryption_keys"
    old_qs = [f"confidential question {i}" for i in range(20)]
    with RagCache(CacheConfig(**shared_cfg, **{mode: [K1]})) as v1:
        for i, q in enumerate(old_qs):
            assert v1.store(q, {"answer": f"secret answer {i}"})
        raw = raw_of(v1, old_qs[0])
        kid1 = kid(raw)
        assert raw.startswith(b"RC1 E " if encrypt else b"RC1 S ")
        if encrypt:  # nothing readable at rest
            assert b"confidential" not in raw and b"secret answer" not in raw
    # Rotation: K2 writes, K1 still reads.
    bus, seen = corrupt_events()
    with RagCache(CacheConfig(**shared_cfg, **{mode: [K2, K1]}), bus=bus) as v2:
        old_read = sum(1 for i, q in enumerate(old_qs)
                       if (h := v2.lookup(q)) is not None
                       and h.value == {"answer": f"secret answer {i}"})
        for i, q in enumerate(old_qs[:10]):  # re-stored entries move to the new key
            v2.store(q, {"answer": f"secret answer {i}"})
        v2.store("brand new", "fresh")
        kid2 = kid(raw_of(v2, "brand new"))
        moved = sum(kid(raw_of(v2, q)) == kid2 for q in old_qs[:10])
        kept = sum(kid(raw_of(v2, q)) == kid1 for q in old_qs[10:])
    assert seen == []
    # K1 retired: entries still under it are misses, each counted (and deleted).
    bus, seen = corrupt_events()
    with RagCache(CacheConfig(**shared_cfg, **{mode: [K2]}), bus=bus) as v3:
        restored = sum(v3.lookup(q) is not None for q in old_qs[:10])
        retired = sum(v3.lookup(q) is None for q in old_qs[10:])
        new_ok = v3.lookup("brand new") is not None
        gone = sum(raw_of(v3, q) == b"" for q in old_qs[10:])
    figures(f"rotation-{kind}-{mode}", old_read_with_both=old_read, moved_to_new_key=moved,
            still_old_key=kept, read_after_retiring=restored, retired_misses=retired,
            foreign_key_events=len(seen), deleted=gone)
    assert old_read == 20 and moved == 10 and kept == 10 and kid1 != kid2
    assert restored == 10 and new_ok
    assert retired == 10 and len(seen) == 10 and gone == 10
    assert all("unknown key" in e.reason for e in seen)


TAMPER: dict[str, Callable[[bytes, bytes], bytes]] = {
    "flipped byte": lambda raw, other: raw[:-5] + bytes([raw[-5] ^ 1]) + raw[-4:],
    "truncated": lambda raw, other: raw[:-10],
    "other entry's payload": lambda raw, other: other,
    "unprotected plaintext": lambda raw, other: (
        b"RC1 -\n" + raw.split(b"\n", 1)[1] if raw.startswith(b"RC1 S") else b"RC1 -\n{}"),
    "unknown key id": lambda raw, other: raw.replace(kid(raw), b"deadbeef", 1),
}


@pytest.mark.parametrize("mode", ["encryption_keys", "signing_keys"])
def test_tampered_or_foreign_entries_are_counted_misses(
        shared: tuple[str, dict[str, Any]], mode: str, figures: Callable[..., str]) -> None:
    kind, shared_cfg = shared
    bus, seen = corrupt_events()
    with RagCache(CacheConfig(**shared_cfg, **{mode: [K1]}), bus=bus) as cache, \
            RagCache(CacheConfig(**shared_cfg, **{mode: [K3]})) as stranger:
        results: dict[str, bool] = {}
        for name, tamper in TAMPER.items():
            q, other = f"q {name}", f"other {name}"
            cache.store(q, {"answer": name})
            cache.store(other, {"answer": "other"})
            put_raw(cache, q, tamper(raw_of(cache, q), raw_of(cache, other)))
            results[name] = cache.lookup(q) is None and raw_of(cache, q) == b""
        # An entry written under a key this cache does not know.
        stranger.store("foreign", {"answer": "planted"})
        results["foreign key"] = cache.lookup("foreign") is None
    figures(f"tamper-{kind}-{mode}", cases=len(results), misses=sum(results.values()),
            events=len(seen))
    assert all(results.values()), results
    assert len(seen) == len(results)


def test_keys_come_from_configuration(tmp_path: Path) -> None:
    env = {"RAG_CACHE_SQLITE_PATH": str(tmp_path / "c.db"),
           "RAG_CACHE_ENCRYPTION_KEYS": f"{K2},{K1}", "RAG_CACHE_KEY_SECRET": "s3cret",
           "RAG_CACHE_L1_MAX_ENTRIES": "0"}
    with RagCache(CacheConfig.from_env(env)) as cache:
        cache.store("q", "v")
        assert raw_of(cache, "q").startswith(b"RC1 E ")
        assert cache.lookup("q").value == "v"  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        RagCache(CacheConfig(encryption_keys=[""]))


# -- keyed key derivation ------------------------------------------------------------------


def test_keys_cannot_be_predicted_without_the_secret(redis_url: str, tmp_path: Path,
                                                     figures: Callable[..., str]) -> None:
    q, ns = "What is the salary of Alice Example?", "acme-hr"
    base = {"sqlite_path": tmp_path / "c.db", "redis": RedisConfig(url=redis_url)}
    with RagCache(CacheConfig(**base, key_secret="secret-one")) as one, \
            RagCache(CacheConfig(**base, key_secret="secret-two")) as two, \
            RagCache(CacheConfig(**base)) as public:
        refs = {n: c.ref(q, namespace=ns) for n, c in
                (("one", one), ("two", two), ("public", public))}
        names = {n: c.l3.data_key(refs[n]) for n, c in  # type: ignore[union-attr]
                 (("one", one), ("two", two), ("public", public))}
        one.store(q, "confidential", namespace=ns)
        assert one.l3 is not None
        stored_names = [k.decode() if isinstance(k, bytes) else str(k)
                        for k in one.l3.client.keys("*")]
        # An attacker knows the algorithm, the question and the tenant, not the secret.
        guesses = set()
        for maker in (KeyMaker(), KeyMaker(b"secret"), KeyMaker(b"")):
            part = maker.partition(ns, "", "")
            guesses |= {maker.entry(part, "what is the salary of alice example"), part,
                        maker.namespace(ns)}
        for text in (q, q.lower(), ns):
            guesses |= {hashlib.sha256(text.encode()).hexdigest()[:32],
                        hashlib.blake2b(text.encode(), digest_size=16).hexdigest(),
                        hashlib.md5(text.encode()).hexdigest()}
    figures("keyed-hash", distinct_l2_keys=len({r.key for r in refs.values()}),
            distinct_l3_names=len(set(names.values())), redis_keys=len(stored_names),
            guesses=len(guesses))
    assert len({r.key for r in refs.values()}) == 3  # L2 keys
    assert len(set(names.values())) == 3  # L3 key names, namespace id included
    data_name = names["one"]
    assert data_name in stored_names
    for guess in guesses:
        assert guess not in data_name
    for name in stored_names:  # neither the tenant nor a word of the question shows
        assert ns not in name and "salary" not in name.lower() and "alice" not in name.lower()
    # Without a secret, keys are the public derivation: anyone can compute them.
    assert refs["public"].key == KeyMaker().entry(
        KeyMaker().partition(ns, "", ""), "what is the salary of alice example")
