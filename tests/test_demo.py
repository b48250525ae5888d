"""``rag-cache demo``: its workload, its model, and its printed figures against what
analytics recorded (in process at a small scale, and the real command)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from rag_cache_plugin import canonicalize
from rag_cache_plugin._demo.model import LocalChatModel, answer_from, count_tokens
from rag_cache_plugin._demo.questions import BY_ID, FAMILIES, FAQ, build_workload

ROOT = Path(__file__).resolve().parents[1]


def test_lexical_variants_are_the_same_canonical_question() -> None:
    for f in FAMILIES:
        assert canonicalize(f.lexical) == canonicalize(f.question), f.id
        assert f.lexical != f.question, f.id
        for p in f.paraphrases:
            assert canonicalize(p) != canonicalize(f.question), p
    assert all(f.twin in BY_ID for f in FAMILIES if f.twin)


@pytest.mark.parametrize("warmed", [(), FAQ], ids=["cold", "faq-warmed"])
@pytest.mark.parametrize("n", [1, 12, 40, 120, 300])
def test_the_workload_knows_what_must_hit_and_what_must_miss(
        n: int, warmed: tuple[str, ...]) -> None:
    work = build_workload(n, warmed=warmed)
    assert len(work) == n and work == build_workload(n, warmed=warmed)  # deterministic
    seen: dict[str, set[str]] = {}
    for q in warmed:
        seen.setdefault(next(f.id for f in FAMILIES if f.question == q), set()).add(
            canonicalize(q))
    for ask in work:
        texts = seen.get(ask.family)
        if texts is None:
            assert ask.expect == "miss" and ask.variant == "original"
        elif canonicalize(ask.question) in texts:
            assert ask.expect == "exact"
        else:
            assert ask.expect == "paraphrase" and ask.variant == "paraphrase"
        twin = BY_ID[ask.family].twin
        assert ask.lookalike == (ask.expect == "miss" and twin is not None and twin in seen)
        seen.setdefault(ask.family, set()).add(canonicalize(ask.question))
    if n >= 40:
        assert sum(a.lookalike for a in work) >= 5
        assert {a.expect for a in work} == {"miss", "exact", "paraphrase"}


def test_the_model_answers_from_its_context_with_realistic_usage() -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    context = ("Instructions.\n\n[Returns]\n- Kettles: the return window is 30 days.\n"
               "- Toasters: the return window is 14 days.")
    assert answer_from(context, "What is the return window for toasters?") == \
        "Toasters: the return window is 14 days."
    model = LocalChatModel(latency_scale=0.0)
    reply = model.invoke([SystemMessage(context),
                          HumanMessage("How long do I have to return a kettle?")])
    assert reply.content == "Kettles: the return window is 30 days."
    usage = reply.usage_metadata
    assert usage is not None and usage["output_tokens"] == count_tokens(str(reply.content))
    assert usage["input_tokens"] > usage["output_tokens"] > 0
    assert model.calls == 1
    assert model.simulated_latency(40) == 0.0
    assert LocalChatModel().simulated_latency(40) == pytest.approx(0.25 * (0.5 + 0.6))


def _run(tmp_path: Path, **options: Any) -> tuple[Any, dict[str, Any], str]:
    from rag_cache_plugin._demo.render import render
    from rag_cache_plugin._demo.run import DemoOptions, run_demo
    from rag_cache_plugin._demo.summary import summarize

    out = io.StringIO()
    console = Console(file=out, width=200)
    settings = {"report": tmp_path / "report.html", "latency_scale": 0.02, **options}
    run = run_demo(DemoOptions(**settings), console)
    summary = summarize(run)
    render(run, summary, console)
    return run, summary, out.getvalue()


@pytest.mark.slow
def test_the_printed_figures_are_what_analytics_recorded(tmp_path: Path) -> None:
    run, s, text = _run(tmp_path, questions=48, window=12, l1_max_entries=8)
    json.dumps(s)  # --json prints exactly this
    snap = run.snapshot
    assert s["checks"] == dict.fromkeys(s["checks"], True) and s["consistent"]
    # The same figures, recounted here from what the user saw.
    cached = [o for o in run.outcomes if o.cache is not None]
    assert s["answers"] == {"asked": 48, "from_cache": len(cached),
                            "model_calls": 48 - len(cached), "rate": len(cached) / 48}
    for tier in ("l1", "l2", "l3"):
        for kind in ("exact", "semantic"):
            assert s["lookups"]["tiers"][tier][kind] == sum(
                o.cache is not None and (o.cache["tier"], o.cache["kind"]) == (tier, kind)
                for o in run.outcomes) == snap.hits(tier, kind)
    assert s["savings"]["tokens"] == sum(sum(o.tokens) for o in cached) > 0
    assert s["savings"]["cost_usd"] == pytest.approx(sum(
        (o.tokens[0] * 2.5 + o.tokens[1] * 10.0) / 1e6 for o in cached))
    assert s["retrievals"]["asked"] == 48
    assert s["lookups"]["hit_rate"] == pytest.approx(len(cached) / 48)
    # The cache's promises on this workload.
    truth = s["ground_truth"]
    assert truth["false_hits"] == 0
    assert truth["lookalikes"]["missed"] == truth["lookalikes"]["total"] >= 5
    assert truth["repeats"]["hit"] == truth["repeats"]["total"] > 0
    assert s["lookups"]["tiers"]["l2"]["hits"] > 0  # L1 is small on purpose
    assert s["windows"] == 4  # one per 12 questions (warming's are apart)
    # The FAQ was warmed before the first user: its first asks hit.
    faq = s["warming"]["runs"][0]
    assert faq["source"] == "faq" and faq["warmed"] == len(FAQ)
    firsts = {o.ask.question: o for o in reversed(run.outcomes)}
    assert all(firsts[q].cache is not None for q in FAQ if q in firsts)
    assert s["warming"]["hits"] > 0 and s["warming"]["runs"][1]["warmed"] > 0
    # What is printed is what the summary holds.
    g = truth["lookalikes"]
    assert re.search(rf"look-alikes correctly missed\s+│ {g['missed']}/{g['total']} ", text)
    a = s["answers"]
    assert re.search(rf"answered from the cache\s+│ {a['from_cache']}/{a['asked']} ", text)
    assert f"{s['health']['score']:.0f}/100" in text
    assert f"HTML report: {run.report}" in text
    assert run.report is not None and "rag-cache demo" in run.report.read_text()


@pytest.mark.slow
def test_the_tuner_acts_at_chain_boundaries_and_the_summary_says_so(tmp_path: Path) -> None:
    # The shadow simulation behind L1 growth wants 256 sampled lookups: a longer run.
    run, s, text = _run(tmp_path, questions=300, l1_max_entries=16, latency_scale=0.0,
                        report=None)
    t = s["tuning"]
    assert t["windows"] == 15  # one per 20 questions, closed by ChainBoundary events
    changes = [d for d in t["decisions"] if d["kind"] == "change"]
    # Both L1 remedies rest on the shadow simulation of the sampled lookups; which one
    # a window proposes first depends on that window's sample.
    assert changes and changes[0]["action"] in ("increase_l1", "switch_policy")
    first = changes[0]
    if first["action"] == "increase_l1":
        assert first["new"]["max_entries"] > first["old"]["max_entries"] == 16
        shown = rf"max_entries 16 -> {first['new']['max_entries']}"
    else:
        assert first["new"] != first["old"]
        shown = ""
    # Kept or rolled back (windows of 20 lookups are noisy): the last verdict stands.
    last = [d for d in t["decisions"] if d["knob"] == first["knob"]][-1]
    if first["knob"] == "l1":
        assert t["settings"]["l1_max_entries"] == last["new"]["max_entries"]
    else:
        assert t["settings"]["l1_policy"] == last["new"]
    assert run.outcomes and s["consistent"]
    assert re.search(rf"window {first['window']}: change\s+│ {first['action']}: {shown}", text)


@pytest.mark.slow
@pytest.mark.redis
def test_with_redis_as_l3(tmp_path: Path, redis_url: str) -> None:
    _, s, text = _run(tmp_path, questions=24, redis_url=redis_url, report=None)
    assert s["consistent"] and s["redis"]["status"] == "ok"
    assert s["ground_truth"]["false_hits"] == 0
    assert "L3 Redis" in text
    import redis

    client = redis.Redis.from_url(redis_url)
    try:  # the demo removes its entries when it ends (the news streams say so)
        left = [k for k in client.scan_iter("ragcdemo:*", count=1000)
                if not k.endswith(b":news")]
        assert not left
    finally:
        client.close()


@pytest.mark.slow
def test_rag_cache_demo_quick_command(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in
                                         ("", "integrations/langchain",
                                          "integrations/llama_index"))}
    done = subprocess.run(
        [sys.executable, "-m", "rag_cache_plugin.cli", "demo", "--quick",
         "--latency-scale", "0.05"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "40 questions to Brightwell Home's support assistant" in out
    found = re.search(r"look-alikes correctly missed\s+│ (\d+)/(\d+)", out)
    assert found and found.group(1) == found.group(2) and int(found.group(2)) >= 5
    assert re.search(r"false hits\s+│ 0 ", out)
    assert re.search(r"answers, marks and tokens agree with analytics\s+│ yes", out)
    for line in ("Answer-cache lookups: 40", "Saved by the cache", "Health (whole run)",
                 "Recommendations", "Warming and tuning", "warming: FAQ",
                 "warming: next deploy", "hits on warmed answers saved"):
        assert line in out
    report = tmp_path / ".rag-cache" / "demo-report.html"
    assert f"HTML report: {report}" in out and report.stat().st_size > 10_000
