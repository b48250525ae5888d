"""L2 faults on real files and real processes: four processes sharing one file, a
writer SIGKILLed mid-transaction, a full database, a read-only file or mount, and a
corrupted file.  None of them may surface an error to a caller: the cache degrades
to misses plus events and, for a damaged file, starts a fresh one."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rag_cache_plugin import CacheConfig, Corrupt, EventBus, Evicted, RagCache, TierFailed

ROOT = Path(__file__).resolve().parents[1]
WORKER = [sys.executable, "-m", "tests.support.sqlite_worker"]


def spawn(*args: str, prefix: tuple[str, ...] = (), **kw: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([*prefix, *WORKER, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def seed(path: Path, n: int, **cfg: Any) -> None:
    with RagCache(CacheConfig(sqlite_path=path, **cfg)) as cache:
        for i in range(n):
            assert cache.store(f"shared question {i}", {"i": i})


def events() -> tuple[EventBus, list[Any]]:
    bus, seen = EventBus(), list[Any]()
    bus.subscribe(seen.append)
    return bus, seen


def works(cache: RagCache, label: str) -> bool:
    """The cache stores and finds an entry through L2 (L1 emptied in between)."""
    ok = cache.store(f"probe {label}", {"label": label})
    cache.l1.clear()
    hit = cache.lookup(f"probe {label}")
    return ok and hit is not None and hit.tier == "l2" and hit.value == {"label": label}


# -- several processes ------------------------------------------------------------------


@pytest.mark.slow
def test_four_processes_share_one_file(tmp_path: Path, figures: Callable[..., str]) -> None:
    path = tmp_path / "shared.db"
    seed(path, 0)  # create it once, so the four race on data, not on the schema
    t = time.perf_counter()
    procs = [spawn("load", str(path), "3", str(w)) for w in range(4)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-2000:]
        results.append(json.loads(out))
    elapsed = time.perf_counter() - t
    events_all: Counter[str] = Counter()
    for r in results:
        events_all.update(r["events"])
    failed = sum(v for k, v in events_all.items() if k.startswith(("TierFailed", "Corrupt")))
    figures("4-processes", processes=4, seconds=elapsed,
            ops=sum(r["ops"] for r in results),
            ops_per_process=[r["ops"] for r in results],
            hits=sum(r.get("hit", 0) for r in results),
            peer_hits=sum(r.get("peer_hit", 0) for r in results),
            misses=sum(r.get("miss", 0) for r in results),
            wrong=sum(r.get("wrong", 0) for r in results),
            exceptions=sum(r["exceptions"] for r in results), tier_failed_or_corrupt=failed,
            integrity=integrity(path))
    assert [r["errors"] for r in results] == [[]] * 4
    assert sum(r.get("wrong", 0) for r in results) == 0
    assert failed == 0, {k: v for k, v in events_all.items() if k.startswith(("Tier", "Corr"))}
    assert sum(r.get("peer_hit", 0) for r in results) > 0, "the processes never shared an entry"
    assert integrity(path) == "ok"


# -- a writer killed ---------------------------------------------------------------------


def test_writer_killed_mid_transaction(tmp_path: Path, figures: Callable[..., str]) -> None:
    path = tmp_path / "c.db"
    seed(path, 50)
    child = spawn("hold", str(path), "2000")
    assert child.stdout is not None
    line = child.stdout.readline()  # written inside the open transaction
    assert line.strip() == "in-transaction", child.stderr.read() if child.stderr else ""
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    child.communicate()
    check = integrity(path)
    with sqlite3.connect(path) as conn:
        uncommitted = conn.execute(
            "SELECT count(*) FROM entries WHERE ns = 'uncommitted'").fetchone()[0]
    bus, seen = events()
    t = time.perf_counter()
    with RagCache(CacheConfig(sqlite_path=path), bus=bus) as cache:
        found = [cache.lookup(f"shared question {i}") for i in range(50)]
        ok = works(cache, "after-kill")
        took = time.perf_counter() - t
    right = sum(1 for i, h in enumerate(found) if h is not None and h.value == {"i": i})
    failures = [e for e in seen if isinstance(e, TierFailed | Corrupt)]
    figures("sigkill-mid-transaction", integrity=check, uncommitted_rows=uncommitted,
            committed_found=right, works_after=ok, reopen_and_use_s=took,
            events_failed=len(failures))
    assert check == "ok"
    assert uncommitted == 0
    assert right == 50
    assert ok and failures == []
    assert took < 2.0, "the dead writer's lock was not released"


@pytest.mark.slow
def test_writer_killed_at_random_points(tmp_path: Path, figures: Callable[..., str]) -> None:
    path = tmp_path / "c.db"
    rng = random.Random(7)
    checks, entries = [], []
    for _round in range(4):
        child = spawn("churn", str(path))
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "started"
        time.sleep(rng.uniform(0.1, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        child.communicate()
        checks.append(integrity(path))
        bus, seen = events()
        with RagCache(CacheConfig(sqlite_path=path, l1_max_entries=0), bus=bus) as cache:
            wrong = 0
            for i in range(200):
                hit = cache.lookup(f"shared question {i}")
                if hit is not None and hit.value.get("i") != i:
                    wrong += 1
            assert wrong == 0
            assert works(cache, f"round {_round}")
            assert cache.l2 is not None
            entries.append(cache.l2.count())
        assert not [e for e in seen if isinstance(e, TierFailed | Corrupt)]
    figures("sigkill-random", rounds=len(checks), integrity=checks, entries_after=entries)
    assert checks == ["ok"] * 4


# -- a full database ---------------------------------------------------------------------


def _page_count(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_full_database_evicts_and_keeps_working(tmp_path: Path, mode: str,
                                                figures: Callable[..., str]) -> None:
    path = tmp_path / "c.db"
    seed(path, 5)
    # max_page_count is per connection: the config applies it to every connection
    # the cache opens, sync and async.  40 pages of 4 KiB is room for ~25 entries.
    cap = _page_count(path) + 40
    cfg = CacheConfig(sqlite_path=path, l1_max_entries=0, sqlite_pragmas={"max_page_count": cap})
    bus, seen = events()
    stored, errors = [], []
    with RagCache(cfg, bus=bus) as cache:
        async def astore_all() -> None:
            for i in range(200):
                stored.append(await cache.astore(f"q{i}", {"i": i, "blob": "z" * 5000}))

        try:
            if mode == "sync":
                for i in range(200):
                    stored.append(cache.store(f"q{i}", {"i": i, "blob": "z" * 5000}))
            else:
                asyncio.run(astore_all())
        except Exception as exc:
            errors.append(exc)
        recent = [cache.lookup(f"q{i}") for i in range(195, 200)]
        # One entry larger than the whole cap: L2 refuses it, nothing else breaks.
        huge = cache.store("huge", {"blob": "h" * 400_000})
        after_huge = works(cache, "after-huge")
        breaker = cache.breakers["l2"].state
    full_evictions = sum(1 for e in seen if isinstance(e, Evicted) and e.reason == "full")
    failed = [e for e in seen if isinstance(e, TierFailed)]
    pages = _page_count(path)
    figures(f"full-db-{mode}", cap_pages=cap, pages=pages, stores=len(stored),
            stored_true=sum(stored), exceptions=len(errors), evicted_full=full_evictions,
            recent_l2_hits=sum(1 for h in recent if h is not None and h.tier == "l2"),
            tier_failed=len(failed), huge_stored=huge, works_after=after_huge,
            breaker=breaker, integrity=integrity(path))
    assert errors == []
    assert all(stored) and huge
    assert full_evictions > 0
    assert all(h is not None and h.tier == "l2" and h.value["i"] == 195 + k
               for k, h in enumerate(recent))
    assert [e.op for e in failed] == ["set"], failed  # only the entry that cannot fit
    assert after_huge and breaker == "closed"
    assert pages <= cap
    assert integrity(path) == "ok"


# -- read-only -----------------------------------------------------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory of its own outside pytest's tree (its mode is changed)."""
    d = Path(tempfile.mkdtemp(prefix="rag-cache-ro-"))
    d.chmod(0o755)
    yield d
    d.chmod(0o755)
    shutil.rmtree(d, ignore_errors=True)


def _unprivileged() -> tuple[str, ...]:
    """A command prefix under which permission bits bite.  Root ignores them
    (CAP_DAC_OVERRIDE): drop that capability for the child.  (Switching to
    ``nobody`` instead would lock the child out of an interpreter under /root.)"""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv(1): cannot make a file read-only")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search")


def _probe(path: Path, *args: str, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    p = spawn("probe", str(path), *args, prefix=prefix)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err[-2000:]
    return dict(json.loads(out.strip().splitlines()[-1]))


def _check_degraded(r: dict[str, Any]) -> None:
    assert r["exceptions"] == 0, r["errors"]
    assert r["stored"] is True and r["astored"] is True  # L1 took them
    assert r["miss"] is True and r["alookup_miss"] is True
    assert any(k.startswith("TierFailed/l2") for k in r["events"]), r["events"]


def test_read_only_file(shared_dir: Path, figures: Callable[..., str]) -> None:
    path = shared_dir / "c.db"
    seed(path, 3)
    # Read-only file in a read-only directory (no -wal or -shm can be created).
    path.chmod(0o444)
    shared_dir.chmod(0o555)
    r = _probe(path, prefix=_unprivileged())
    figures("read-only-file", uid=r["uid"], l2_enabled=r["l2"], seeded_hits=r["seeded"],
            exceptions=r["exceptions"], events=r["events"], sqlite_said=r["tier_errors"])
    _check_degraded(r)


def test_file_turns_read_only_while_open(shared_dir: Path, figures: Callable[..., str]) -> None:
    path = shared_dir / "c.db"
    seed(path, 3)
    r = _probe(path, "--chmod", prefix=_unprivileged())
    figures("turns-read-only", uid=r["uid"], l2_enabled=r["l2"], seeded_hits=r["seeded"],
            after_store=r["after_store"], exceptions=r["exceptions"], events=r["events"],
            sqlite_said=r["tier_errors"])
    _check_degraded(r)
    assert r["l2"] is True and r["seeded"] == [True, True, True]  # reads still work


def test_read_only_mount(shared_dir: Path, figures: Callable[..., str]) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) to make a read-only bind mount")
    trial = subprocess.run(["unshare", "-rm", "mount", "--bind", "-o", "ro", str(shared_dir),
                            str(shared_dir)], capture_output=True, text=True, check=False)
    if trial.returncode != 0:
        pytest.skip(f"user namespaces unavailable: {trial.stderr.strip()}")
    path = shared_dir / "c.db"
    seed(path, 3)
    d = str(shared_dir)
    prefix = ("unshare", "-rm", "sh", "-c", f'mount --bind -o ro "{d}" "{d}" && exec "$0" "$@"')
    r = _probe(path, prefix=prefix)
    figures("read-only-mount", l2_enabled=r["l2"], seeded_hits=r["seeded"],
            exceptions=r["exceptions"], events=r["events"], sqlite_said=r["tier_errors"])
    _check_degraded(r)
    assert integrity(path) == "ok"


# -- a corrupted file ----------------------------------------------------------------------


def _garble(path: Path, where: str) -> None:
    data = bytearray(path.read_bytes())
    rng = random.Random(where)
    if where == "header":
        data[:100] = rng.randbytes(100)
    else:  # every page but the first (the header and schema root) gets garbage
        for off in range(4096, len(data), 4096):
            data[off + 8 : off + 4096] = rng.randbytes(4096 - 8)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["header", "pages"])
def test_corrupted_file_is_replaced(tmp_path: Path, where: str,
                                    figures: Callable[..., str]) -> None:
    path = tmp_path / "c.db"
    seed(path, 50)
    _garble(path, where)
    bus, seen = events()
    errors = []
    with RagCache(CacheConfig(sqlite_path=path, l1_max_entries=0), bus=bus) as cache:
        try:
            misses = sum(1 for i in range(50) if cache.lookup(f"shared question {i}") is None)
            amiss = asyncio.run(cache.alookup("shared question 1")) is None
            ok = works(cache, where)
        except Exception as exc:
            errors.append(exc)
    replaced = [e for e in seen if isinstance(e, Corrupt) and "replaced" in e.reason]
    aside = sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)
    figures(f"corrupt-{where}", replaced_events=len(replaced), aside=aside, misses=misses,
            works_after=ok, exceptions=len(errors), integrity=integrity(path))
    assert errors == []
    assert len(replaced) == 1 and aside
    assert misses == 50 and amiss and ok
    assert integrity(path) == "ok"


def test_corrupted_under_open_caches(tmp_path: Path, figures: Callable[..., str]) -> None:
    """A file damaged while caches have it open: the first to notice replaces it, the
    others follow to the fresh file instead of moving it aside or writing to the
    damaged one."""
    path = tmp_path / "c.db"
    seed(path, 50)
    bus_a, seen_a = events()
    cfg = CacheConfig(sqlite_path=path, l1_max_entries=0, news_poll_interval=0.05)
    with RagCache(cfg, bus=bus_a) as a:
        assert a.lookup("shared question 1") is not None
        assert a.l2 is not None
        a.l2._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _garble(path, "pages")
        bus_b, seen_b = events()
        with RagCache(cfg, bus=bus_b) as b:  # opens the damaged file: replaces it
            t = time.perf_counter()
            a.store("written by a", "A")
            seen_by_b = False
            while time.perf_counter() - t < 5 and not seen_by_b:
                # a follows to the new file within a second; until then its write may
                # land on the old one, so it writes again.
                a.store("written by a", "A")
                hit = b.lookup("written by a")
                seen_by_b = hit is not None and hit.value == "A"
                time.sleep(0.05)
            follow_s = time.perf_counter() - t
            b.store("written by b", "B")
            hit_a = a.lookup("written by b")
    aside = {p.name.split(".corrupt-")[1].split("-")[0] for p in tmp_path.iterdir()
             if ".corrupt-" in p.name}
    replaced = [e for e in seen_a + seen_b if isinstance(e, Corrupt) and "replaced" in e.reason]
    figures("corrupt-while-open", replaced_events=len(replaced), aside_sets=len(aside),
            a_follows_s=follow_s, b_sees_a=seen_by_b, a_sees_b=hit_a is not None,
            integrity=integrity(path))
    assert seen_by_b and hit_a is not None and hit_a.value == "B"
    assert len(aside) == 1, "the fresh file was moved aside again"
    assert integrity(path) == "ok"


def test_file_deleted_under_a_running_cache(tmp_path: Path, figures: Callable[..., str]) -> None:
    """Someone removes the cache file (a cleanup job, a user): the cache notices
    within a second, starts a fresh file and keeps working."""
    path = tmp_path / "c.db"
    bus, seen = events()
    with RagCache(CacheConfig(sqlite_path=path, l1_max_entries=0), bus=bus) as cache:
        cache.store("before", "v")
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        t = time.perf_counter()
        ok = False
        while not ok and time.perf_counter() - t < 5:
            ok = works(cache, "after-delete") and path.exists()
            time.sleep(0.1)
        took = time.perf_counter() - t
        before = cache.lookup("before")
    figures("file-deleted", recovered_s=took, works_after=ok, old_entry=before is not None,
            integrity=integrity(path), tier_failed=sum(isinstance(e, TierFailed) for e in seen))
    assert ok and before is None
    assert integrity(path) == "ok"
