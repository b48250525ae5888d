"""Exports: the Prometheus endpoint scraped over HTTP and parsed, the ``rag-cache
stats`` and ``rag-cache report`` commands, and the HTML report opened in headless
Chromium (renders, its charts load, no console errors)."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from _analytics_helpers import AliasSemantic, compute
from _browser import open_page
from prometheus_client.parser import text_string_to_metric_families

from rag_cache_plugin import CacheConfig, RagCache
from rag_cache_plugin.analytics import AlertRule, CacheAnalytics
from rag_cache_plugin.cli import main

PRICES = {"model-a": (3.0, 15.0)}


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[tuple[RagCache, CacheAnalytics]]:
    """A cache with history: several windows, hits of both kinds, an alert that
    fired and cleared, and one still firing."""
    with RagCache(CacheConfig(sqlite_path=tmp_path / "c.db")) as cache:
        cache.semantic = AliasSemantic(cache, {"paraphrase 0": "question 0"})
        rules = [AlertRule("low_hits", "hit_rate", "<", 0.5, "warning", 0.6, 1, 1),
                 AlertRule("slow_model", "model_p95", ">", 0.1, "critical")]
        analytics = CacheAnalytics(cache, autostart=False, price_table=PRICES,
                                   alert_rules=rules)
        for window in range(6):
            for i in range(5):
                compute(cache, f"w{window} question {i}", i, model="model-a",
                        input_tokens=500, output_tokens=100, latency=0.4)
            hits = 2 if window in (1, 2) else 20
            for j in range(hits):
                cache.lookup(f"w{window} question {j % 5}")
            analytics.capture_snapshot()
        compute(cache, "question 0", "x", model="model-a", input_tokens=1, output_tokens=1,
                latency=0.2)
        cache.lookup("paraphrase 0")
        yield cache, analytics
        analytics.close(capture=False)


def test_prometheus_endpoint_scraped_and_parsed(busy: tuple[RagCache, CacheAnalytics]) -> None:
    cache, analytics = busy
    server, port = analytics.serve_prometheus(0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    totals = analytics.totals()
    lookups = {(s.labels["tier"], s.labels["result"], s.labels["kind"]): s.value
               for s in families["rag_cache_lookups"].samples if s.name.endswith("_total")}
    assert families["rag_cache_lookups"].type == "counter"
    assert lookups[("l1", "hit", "exact")] == totals.hits("l1", "exact") == 2 * 2 + 4 * 20
    assert lookups[("l1", "hit", "semantic")] == 1
    assert lookups[("none", "miss", "none")] == totals.count("misses") == 31
    hist = families["rag_cache_lookup_duration_seconds"]
    assert hist.type == "histogram"
    count = {s.labels["outcome"]: s.value for s in hist.samples if s.name.endswith("_count")}
    assert count["l1"] == 84 and count["miss"] == 31
    buckets = [s for s in hist.samples
               if s.name.endswith("_bucket") and s.labels["outcome"] == "l1"]
    values = [s.value for s in buckets]
    assert values == sorted(values) and buckets[-1].labels["le"] == "+Inf"
    saved = {s.name: s.value for s in families["rag_cache_cost_saved_usd"].samples}
    assert saved["rag_cache_cost_saved_usd_total"] == pytest.approx(totals.cost_saved)
    assert families["rag_cache_l1_entries"].samples[0].value == len(cache.l1)
    health = families["rag_cache_health_score"].samples[0].value
    assert 0 <= health <= 100
    active = {s.labels["severity"]: s.value for s in families["rag_cache_alerts_active"].samples}
    assert active["critical"] == 1  # slow_model fires: every model call takes 0.4 s
    assert "rag_cache_call_duration_seconds" in families


def test_stats_command(busy: tuple[RagCache, CacheAnalytics],
                       capsys: pytest.CaptureFixture[str]) -> None:
    _cache, analytics = busy
    analytics.capture_snapshot()
    assert analytics.store is not None
    path = str(analytics.store.path)
    assert main(["stats", "--json", "--path", path]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["metrics"]["hits"] == 85
    assert data["metrics"]["lookups"] == 85 + 31
    assert data["health"]["score"] <= 100
    assert {a["rule"] for a in data["alerts"]} == {"low_hits", "slow_model"}
    assert main(["stats", "--path", path, "--since", "1h"]) == 0
    table = capsys.readouterr().out
    assert "hit rate" in table and "per tier" in table
    with pytest.raises(SystemExit, match="no such analytics store"):
        main(["stats", "--path", path + ".missing"])


def test_report_command_writes_self_contained_html(busy: tuple[RagCache, CacheAnalytics],
                                                   tmp_path: Path) -> None:
    _cache, analytics = busy
    analytics.capture_snapshot()
    assert analytics.store is not None
    out = tmp_path / "report.html"
    assert main(["report", "--path", str(analytics.store.path), "-o", str(out)]) == 0
    text = out.read_text()
    assert text.count('src="data:image/png;base64,') == 4
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)  # nothing fetched
    assert "<script" not in text
    assert "low_hits" in text and "slow_model" in text


def test_report_renders_in_headless_chromium(busy: tuple[RagCache, CacheAnalytics],
                                             tmp_path: Path) -> None:
    _cache, analytics = busy
    out = analytics.write_report(tmp_path / "dashboard.html", title="Cache <dashboard>")
    page = open_page(out.resolve().as_uri(), {
        "title": "document.title",
        "heading": "document.querySelector('h1').textContent",
        "images": "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, "
                  "i.naturalHeight])",
        "tables": "document.querySelectorAll('table').length",
        "text": "document.body.innerText.length",
    })
    assert page.errors == [], page.errors
    assert page.values["title"] == page.values["heading"] == "Cache <dashboard>"
    images = page.values["images"]
    assert [alt for alt, *_ in images] == ["Hit rate over time", "Latency over time",
                                          "Savings over time", "Alerts over time"]
    for alt, complete, width, height in images:
        assert complete and width > 0 and height > 0, alt
    assert page.values["tables"] >= 4 and page.values["text"] > 500


def test_the_browser_check_would_catch_errors(tmp_path: Path) -> None:
    page_file = tmp_path / "broken.html"
    page_file.write_text("<!DOCTYPE html><html><head><title>t</title></head><body>"
                         "<img alt=x src='missing.png'>"
                         "<script>console.error('boom'); undefinedFunction();</script>"
                         "</body></html>")
    page = open_page(page_file.as_uri(), {
        "images": "Array.from(document.images).map(i => i.naturalWidth)"})
    assert page.values["images"] == [0]
    joined = " | ".join(page.errors)
    assert "boom" in joined and "exception" in joined and "missing.png" in joined
