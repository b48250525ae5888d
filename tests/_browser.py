"""Open a page in headless Chromium and read it through the DevTools protocol:
console messages, uncaught exceptions, failed loads, and JavaScript results."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@dataclass
class PageReport:
    errors: list[str] = field(default_factory=list)
    console: list[tuple[str, str]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


def _devtools_port(user_dir: Path, proc: subprocess.Popen[bytes], timeout: float) -> int:
    marker = user_dir / "DevToolsActivePort"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        time.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")


def open_page(url: str, expressions: dict[str, str], *, timeout: float = 60.0) -> PageReport:
    """Load ``url``, evaluate ``expressions`` (name -> JavaScript) after the load
    event, and collect every console message and error on the way."""
    binary = shutil.which("chromium")
    if binary is None:
        raise RuntimeError("chromium is not installed (make system-deps)")
    report = PageReport()
    with tempfile.TemporaryDirectory(prefix="rag-cache-chromium-") as tmp:
        user_dir = Path(tmp)
        proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={user_dir}",
                                 "--remote-debugging-port=0", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port = _devtools_port(user_dir, proc, timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                page = next(t for t in json.load(r) if t["type"] == "page")
            with connect(page["webSocketDebuggerUrl"], max_size=None,
                         open_timeout=timeout) as ws:
                _drive(ws, url, expressions, report, timeout)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return report


def _drive(ws: Any, url: str, expressions: dict[str, str], report: PageReport,
           timeout: float) -> None:
    ids = iter(range(1, 10_000))
    deadline = time.monotonic() + timeout

    def send(method: str, **params: Any) -> int:
        n = next(ids)
        ws.send(json.dumps({"id": n, "method": method, "params": params}))
        return n

    def pump(until: Any) -> dict[str, Any]:
        while True:
            msg = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            method = msg.get("method")
            p = msg.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", "")))
                                for a in p.get("args", []))
                report.console.append((p["type"], text))
                if p["type"] in ("error", "assert"):
                    report.errors.append(f"console.{p['type']}: {text}")
            elif method == "Runtime.exceptionThrown":
                report.errors.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                report.errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif method == "Network.loadingFailed":
                report.errors.append(f"load failed: {p.get('errorText')}")
            if until(msg):
                return msg

    for domain in ("Runtime", "Log", "Page", "Network"):
        n = send(f"{domain}.enable")
        pump(lambda m, n=n: m.get("id") == n)
    send("Page.navigate", url=url)
    pump(lambda m: m.get("method") == "Page.loadEventFired")
    for name, expr in expressions.items():
        n = send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        reply = pump(lambda m, n=n: m.get("id") == n)
        result = reply["result"]
        if "exceptionDetails" in result:
            report.errors.append(f"evaluate {name}: {result['exceptionDetails'].get('text')}")
        report.values[name] = result["result"].get("value")
    # Let late console messages arrive (image decoding, layout).
    n = send("Runtime.evaluate", expression="new Promise(r => setTimeout(r, 300))",
             awaitPromise=True)
    pump(lambda m: m.get("id") == n)
