"""Simulator: determinism, common random numbers across policies, headline results."""

from __future__ import annotations

from kvmctx import api


def test_same_seed_same_counters():
    a = api.run("upstream-6.14", "default", seed=7, events=5000)
    b = api.run("upstream-6.14", "default", seed=7, events=5000)
    assert a.as_json() == b.as_json()
    c = api.run("upstream-6.14", "default", seed=8, events=5000)
    assert c.counters != a.counters


def test_policies_see_the_same_workload():
    a = api.run("upstream-6.14", "default", seed=3, events=20000)
    b = api.run("arm64-4.17", "default", seed=3, events=20000)
    for key in ("guest_exits", "exits_to_user", "guest_fp_uses", "syscalls", "context_switches",
                "migrations", "vcpu_loads"):
        assert a.counters[key] == b.counters[key], key
    assert a.sim.exit_reasons == b.sim.exit_reasons


def test_default_upstream_fewer_saves_restores_than_4_17():
    a = api.run("upstream-6.14", "default", seed=1, events=30000)
    b = api.run("arm64-4.17", "default", seed=1, events=30000)
    sa = a.metrics()["saves"] + a.metrics()["restores"]
    sb = b.metrics()["saves"] + b.metrics()["restores"]
    assert sa < sb
    assert a.metrics()["violations"] == 0 and b.metrics()["violations"] == 0


def test_order_flips_when_every_exit_returns_to_the_vmm():
    a = api.run("upstream-6.14", "default", seed=3, events=30000, knobs={"exit_user": 1.0})
    b = api.run("arm64-4.17", "default", seed=3, events=30000, knobs={"exit_user": 1.0})
    assert a.metrics()["saves"] + a.metrics()["restores"] > \
        b.metrics()["saves"] + b.metrics()["restores"]


def test_guest_fp_knob_changes_fp_segments():
    lo = api.run("upstream-6.14", "default", seed=1, events=20000, knobs={"guest_fp": 0.0})
    hi = api.run("upstream-6.14", "default", seed=1, events=20000, knobs={"guest_fp": 1.0})
    assert lo.counters["guest_fp_traps"] == 0
    assert hi.counters["guest_fp_traps"] > 0
    assert hi.sim.segments_fp == hi.sim.segments


def test_every_scenario_runs_clean_under_both_policies():
    from kvmctx.workloads.scenarios import SCENARIOS

    for name in SCENARIOS:
        for pol in ("upstream-6.14", "arm64-4.17"):
            r = api.run(pol, name, seed=5, events=4000)
            assert r.metrics()["violations"] == 0, (name, pol, r.sim.violation_records[:2])
