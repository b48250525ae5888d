"""The demo's summary: figures read from the merged analytics snapshot, joined with
the workload's ground truth (which asks had to hit, which had to miss)."""

from __future__ import annotations

from typing import Any

from .run import DemoRun, Outcome, load_average

__all__ = ["ground_truth", "summarize"]


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _ms(v: float | None) -> float | None:
    return None if v is None else round(1000 * v, 3)


def ground_truth(outcomes: list[Outcome]) -> dict[str, Any]:
    """Per-ask outcomes against what each ask had to do."""
    def count(pred: Any) -> tuple[int, int]:
        chosen = [o for o in outcomes if pred(o)]
        return sum(o.cache is not None for o in chosen), len(chosen)

    exact_hit, exact = count(lambda o: o.ask.expect == "exact")
    para_hit, para = count(lambda o: o.ask.expect == "paraphrase")
    look_hit, looks = count(lambda o: o.ask.lookalike)
    first_hit, first = count(lambda o: o.ask.expect == "miss")
    false_hits = [o for o in outcomes if o.ask.expect == "miss" and o.cache is not None]
    return {
        "repeats": {"hit": exact_hit, "total": exact},
        "paraphrases": {"hit": para_hit, "total": para},
        "lookalikes": {"missed": looks - look_hit, "total": looks},
        "first_asks": {"missed": first - first_hit, "total": first},
        "false_hits": len(false_hits),
        "false_hit_questions": [o.ask.question for o in false_hits],
        "answered_from_cache": sum(o.cache is not None for o in outcomes),
        "asked": len(outcomes),
    }


def checks(run: DemoRun) -> dict[str, bool]:
    """What the user saw (answers, their marks and usage, the model's own count)
    against what analytics recorded."""
    s = run.snapshot
    cached = [o for o in run.outcomes if o.cache is not None]
    fresh = [o for o in run.outcomes if o.cache is None]
    by_mark = {(t, k): sum(o.cache is not None and o.cache["tier"] == t
                           and o.cache["kind"] == k for o in run.outcomes)
               for t in ("l1", "l2", "l3") for k in ("exact", "semantic")}
    return {
        "questions": s.count("calls.chat") == len(run.outcomes) == s.lookups,
        "cached_answers": s.count("cached.chat") == len(cached),
        "tiers": all(s.hits(t, k) == n for (t, k), n in by_mark.items()),
        "model_calls": run.model_calls == len(fresh) == int(s.metrics()["model_calls"] or 0),
        "tokens_spent": s.count("spent.input_tokens") == sum(o.tokens[0] for o in fresh)
        and s.count("spent.output_tokens") == sum(o.tokens[1] for o in fresh),
        "tokens_saved": s.count("saved.input_tokens") == sum(o.tokens[0] for o in cached)
        and s.count("saved.output_tokens") == sum(o.tokens[1] for o in cached),
    }


def summarize(run: DemoRun) -> dict[str, Any]:
    """JSON-ready summary.  Every cache figure comes from ``run.snapshot``."""
    s = run.snapshot
    m = s.metrics()
    asked, cached = int(s.count("calls.chat")), int(s.count("cached.chat"))
    retrievals = int(s.count("calls.retrieval"))
    cached_retrievals = int(s.count("cached.retrieval"))
    truth = ground_truth(run.outcomes)
    base, per_token = run.simulated_latency
    out: dict[str, Any] = {
        "questions": len(run.outcomes),
        "semantic": {"model": "sentence-transformers/all-MiniLM-L6-v2",
                     "setting": run.options.semantic_setting},
        "answers": {"asked": asked, "from_cache": cached, "model_calls": asked - cached,
                    "rate": _ratio(cached, asked)},
        "retrievals": {"asked": retrievals, "from_cache": cached_retrievals,
                       "rate": _ratio(cached_retrievals, retrievals)},
        "lookups": {
            "total": s.lookups, "hits": s.hits(), "misses": int(s.count("misses")),
            "hit_rate": m["hit_rate"], "exact_rate": m["exact_hit_rate"],
            "semantic_rate": m["semantic_hit_rate"],
            "tiers": {t: {"hits": s.hits(t), "exact": s.hits(t, "exact"),
                          "semantic": s.hits(t, "semantic"), "rate": m[f"{t}_hit_rate"]}
                      for t in ("l1", "l2", "l3")},
            "stores": int(s.count("stores")), "evictions": m["evictions"],
        },
        "ground_truth": truth,
        "checks": checks(run),
        "savings": {"tokens": s.tokens_saved, "input_tokens": int(s.count("saved.input_tokens")),
                    "output_tokens": int(s.count("saved.output_tokens")),
                    "cost_usd": s.cost_saved, "cost_spent_usd": m["cost_spent"],
                    "model_seconds": s.latency_saved,
                    "tokens_spent": int(s.count("spent.input_tokens")
                                        + s.count("spent.output_tokens"))},
        "latency_ms": {name: {"p50": _ms(m[f"{name}_p50"]), "p95": _ms(m[f"{name}_p95"])}
                       for name in ("l1", "l2", "l3", "semantic", "miss", "model")},
        "simulated_latency_ms": {"base": round(1000 * base, 1),
                                 "per_output_token": round(1000 * per_token, 2),
                                 "scale": run.options.latency_scale},
        "health": run.health.to_dict(),
        "alerts": [{k: a[k] for k in ("rule", "severity", "state", "value", "message")}
                   for a in run.alerts],
        "active_alerts": run.active_alerts,
        "recommendations": [r.to_dict() for r in run.recommendations],
        "tuning": {"decisions": run.tuning, **run.tuned},
        "warming": run.warming,
        "redis": run.redis,
        "windows": run.windows,
        "report": str(run.report) if run.report else None,
        "seconds": {"startup": round(run.startup_seconds, 2),
                    "workload": round(run.workload_seconds, 2)},
        "load_average": load_average(),
    }
    out["consistent"] = all(out["checks"].values())
    return out
