"""What a warming run did, and what warming did overall."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Status", "TaskResult", "WarmingReport", "WarmingStats", "summarize"]

Status = Literal["warmed", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class TaskResult:
    """The outcome of one task.  ``reason`` says why it was skipped or failed;
    ``stored_by`` is "runner" when the runner filled the cache itself."""

    question: str
    key: str
    namespace: str
    kind: str
    status: Status
    reason: str = ""
    attempts: int = 0
    cost: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    latency: float = 0.0
    stored_by: str = ""
    keys: tuple[str, ...] = ()


@dataclass(slots=True)
class WarmingReport:
    """One run (persisted in the log's history)."""

    run_id: str
    started: float
    source: str
    planned: int
    finished: float | None = None
    status: Literal["running", "completed", "cancelled"] = "running"
    results: list[TaskResult] = field(default_factory=list)

    def _count(self, status: Status) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def warmed(self) -> int:
        return self._count("warmed")

    @property
    def refreshed(self) -> int:
        return sum(r.status == "warmed" and r.kind == "refresh" for r in self.results)

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def cost(self) -> float:
        return sum(r.cost for r in self.results)

    @property
    def input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.results)

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.results)

    @property
    def failures(self) -> list[TaskResult]:
        return [r for r in self.results if r.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "started": self.started, "finished": self.finished,
                "source": self.source, "status": self.status, "planned": self.planned,
                "warmed": self.warmed, "refreshed": self.refreshed, "skipped": self.skipped,
                "failed": self.failed, "cost": self.cost, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "results": [dataclasses.asdict(r) for r in self.results]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WarmingReport:
        results = [TaskResult(**{**r, "keys": tuple(r.get("keys", ()))})
                   for r in data.get("results", [])]
        return cls(data["run_id"], data["started"], data["source"], data["planned"],
                   data.get("finished"), data.get("status", "completed"), results)


@dataclass(frozen=True, slots=True)
class WarmingStats:
    """Every recorded run, and the hits warmed entries served since.

    ``hits``: lookups answered by an entry a warming run wrote (until a user's own
    answer replaced it); each saved what computing that entry cost, so
    ``roi = saved_cost / cost`` (None while warming cost nothing)."""

    runs: int
    warmed: int
    refreshed: int
    skipped: int
    failed: int
    cost: float
    input_tokens: int
    output_tokens: int
    hits: int
    saved_cost: float
    saved_latency: float
    roi: float | None
    last_run: WarmingReport | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["last_run"] = None if self.last_run is None else self.last_run.to_dict()
        return out


def summarize(runs: Iterable[Mapping[str, Any]], hits: tuple[int, float, float]
              ) -> WarmingStats:
    """Totals over stored run records plus (hits, saved cost, saved latency)."""
    runs = list(runs)

    def total(name: str) -> Any:
        return sum(r.get(name, 0) for r in runs)

    cost = float(total("cost"))
    n, saved, saved_latency = hits
    return WarmingStats(
        runs=len(runs), warmed=total("warmed"), refreshed=total("refreshed"),
        skipped=total("skipped"), failed=total("failed"), cost=cost,
        input_tokens=total("input_tokens"), output_tokens=total("output_tokens"), hits=n,
        saved_cost=saved, saved_latency=saved_latency, roi=saved / cost if cost > 0 else None,
        last_run=WarmingReport.from_dict(runs[-1]) if runs else None)
