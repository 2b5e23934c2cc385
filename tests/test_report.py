"""`kvmctx report` and `kvmctx timeline`: the HTML and the trace JSON hold what they claim."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kvmctx import api
from kvmctx.io.report import build_report
from kvmctx.io.timeline import build_timeline

DATA = Path(__file__).parent / "data" / "traces"


class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        self._in_h2 = tag == "h2"

    def handle_data(self, data):  # noqa: ANN001
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


def parse(html: str) -> Collect:
    c = Collect()
    c.feed(html)
    return c


def test_report_on_a_scenario_has_every_section_and_real_pngs() -> None:
    pols = ["upstream-6.14", "arm64-4.17", "tang-eager-2018"]
    html = build_report(pols, "hpc-sve", seed=1, events=3000)
    c = parse(html)
    for sec in ("Comparison", "Cost breakdown", "Per 1,000 exits", "Eager-restore predictors",
                "Vector length", "Assumptions"):
        assert sec in c.h2, sec
    assert len(c.imgs) == 4
    for src in c.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for p in pols + ["oracle"]:
        assert f">{p}<" in html
    assert "http" not in html.replace("https://ui.perfetto.dev", "")  # self-contained


def test_report_escapes_and_covers_a_trace() -> None:
    tw = api.load_trace(str(DATA / "qemu-2vcpu.txt"))
    html = build_report(["upstream-6.14"], seed=0, trace=tw)
    assert "trace:qemu-2vcpu.txt" in html
    assert "guest FP use is not in traces" in html
    assert "<script" not in html


def test_timeline_is_valid_trace_event_json() -> None:
    obj = build_timeline("tang-eager-2018", "default", seed=1, events=3000)
    evs = obj["traceEvents"]
    assert obj["displayTimeUnit"] == "ns"
    names = {e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"CPU0", "CPU1"}
    tracks: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for e in evs:
        assert {"ph", "pid", "tid", "name"} <= set(e)
        if e["ph"] == "X":
            assert e["dur"] >= 0
            tracks.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
        elif e["ph"] == "i":
            assert "ts" in e
    for spans in tracks.values():  # slices on one track never overlap
        spans.sort()
        assert all(a[1] <= b[0] + 1e-9 for a, b in zip(spans, spans[1:], strict=False))
    kinds = {e["name"] for e in evs if e["ph"] == "i"}
    assert {"save", "restore", "guest FP trap"} <= kinds
    assert any(k.startswith("VIOLATION") for k in kinds)  # tang's flaw shows up


def test_timeline_on_a_trace_uses_its_timestamps() -> None:
    tw = api.load_trace(str(DATA / "kvmtool-1vcpu.txt"))
    obj = build_timeline("upstream-6.14", trace=tw, events=-1)
    ts = [e["ts"] for e in obj["traceEvents"] if "ts" in e]
    span = max(ts) - min(ts)
    assert 1000 < span < 2000  # the sample covers about 1.7 ms


def kvmctx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvmctx", *args], capture_output=True,
                          text=True, timeout=600)


def test_cli_report_timeline_and_errors(tmp_path: Path) -> None:
    r = kvmctx("report", "--policies", "upstream-6.14,pkvm", "-s", "idle-guest", "--events",
               "2000", "-o", str(tmp_path / "r.html"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r.html").stat().st_size > 20_000
    r = kvmctx("timeline", "-p", "arm64-4.17", "-o", str(tmp_path / "t.json"))
    assert r.returncode == 0, r.stderr
    json.loads((tmp_path / "t.json").read_text())
    for args in (["report", "--policies", "nope"], ["report", "-s", "nope"],
                 ["timeline", "-p", "oracle"], ["report", "--trace", str(tmp_path / "x")]):
        r = kvmctx(*args, "-o", str(tmp_path / "z"))
        assert r.returncode == 2, args
        assert "Traceback" not in r.stderr and r.stderr.startswith("kvmctx: error")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    html = tmp_path / "r.html"
    html.write_text(build_report(["upstream-6.14", "arm64-4.17"], "mmio-heavy", seed=2,
                                 events=3000))
    png = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'prof'}", f"--screenshot={png}",
                    "--window-size=1300,2400", html.as_uri()],
                   capture_output=True, timeout=120, check=False)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
