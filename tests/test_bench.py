"""`kvmctx bench` smoke run and the checker's clean stop at a memory limit."""

from __future__ import annotations

import json
import subprocess
import sys

from kvmctx import api
from kvmctx.engines import bench
from kvmctx.engines import checker as CK
from kvmctx.model.machine import Model

KEYS = ("sim_events_per_s", "sim_events_per_s_no_invariants", "floor_events_per_s",
        "sim_floor_ratio", "simpy_events_per_s", "checker_states_per_s", "checker_states",
        "checker_rss_mb_per_million_states", "checker_states_per_s_python",
        "checker_bytes_per_state", "checker_jobs2_speedup", "checker_native_python_ratio")


def test_bench_quick_json_has_every_key() -> None:
    r = subprocess.run([sys.executable, "-m", "kvmctx", "bench", "--quick", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    for k in KEYS:
        assert k in data and data[k] is not None and data[k] > 0, k
    assert data["checker_states"] >= 150_000
    # The floor does strictly less work than the simulator on the same stream.
    assert data["sim_floor_ratio"] < 1


def test_floor_replays_the_recorded_stream() -> None:
    actions = bench.recorded_stream("upstream-6.14", 2000)
    assert len(actions) >= 2000
    assert bench.floor_rate(actions, 2000, 2) > 0
    assert (bench.simpy_rate(actions, 2000, 2) or 0) > 0


def test_checker_stops_cleanly_at_a_memory_limit() -> None:
    pol = api.resolve_policy("upstream-6.14")
    b = CK.adapt_bounds(CK.BOUNDS["standard"], pol.supports)[0]
    res = CK.Checker(Model(b.config(), pol), b, max_memory_mb=1.0).run()
    assert not res.complete and res.violation is None
    assert res.stop_reason.startswith("memory limit")


def test_cli_check_memory_limit_is_exit_3_incomplete() -> None:
    r = subprocess.run([sys.executable, "-m", "kvmctx", "check", "-p", "upstream-6.14",
                        "--max-memory-mb", "1", "--json"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stdout)["complete"] is False
