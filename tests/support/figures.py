"""Measured figures of fault and bad-input tests, shown whatever pytest's capture mode.

A test calls ``figures(name=value, ...)`` (the ``figures`` fixture): the line is printed
(pytest shows it with ``-rA`` or on failure), recorded as a ``user_property`` (JUnit XML,
and it travels back from pytest-xdist workers) and collected into one short section at
the end of the terminal summary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

_KEY = "figures"
_collected: list[tuple[str, str]] = []


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_figures(**values: Any) -> str:
    """``a=1 b=0.25`` (floats to 4 significant digits)."""
    return " ".join(f"{k}={_fmt(v)}" for k, v in values.items())


@pytest.fixture
def figures(record_property: Callable[[str, object], None]) -> Callable[..., str]:
    """Print and record one line of figures; returns the line."""

    def record(label: str = "", **values: Any) -> str:
        line = (f"[{label}] " if label else "") + format_figures(**values)
        print(line)
        record_property(_KEY, line)
        return line

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Runs in the controller under xdist too, with the worker's user_properties.
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name == _KEY:
            _collected.append((report.nodeid, str(value)))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _collected:
        return
    terminalreporter.section("measured figures", sep="-")
    for nodeid, line in _collected:
        terminalreporter.write_line(f"{nodeid.rsplit('::', 1)[-1]}: {line}")
