"""The seeds' own verdicts at --bounds standard (issue 5), each pinned.

They run on the default engine (the native one when built); tests/test_native.py
holds it to exact agreement with the Python engine."""

from __future__ import annotations

import pytest

from kvmctx import policies as P
from kvmctx.engines import checker as CK
from kvmctx.engines import engine as EN
from kvmctx.model.machine import SCHED, Model

# Distinct states at --bounds standard (docs/checker.md): a model change that moves
# them is deliberate, and its commit says by how much.
SAFE = {"arm32-vfp-2012": 96_812, "arm64-4.17": 15_615_851, "martin-rfc-2018": 2_872_969,
        "upstream-4.18": 5_871_342, "brown-sve-2022": 6_557_546, "upstream-6.14": 6_563_784,
        "pkvm": 6_970_860}
BROKEN = {
    "tang-eager-2018": ("confidentiality", "integrity"),
    "dall-tif-2018": ("confidentiality", "integrity"),
    "martin-rfc-2018-posted": ("no-bug",),
}


def check(policy, bounds=None):
    pol = P.get(policy)
    b, notes = CK.adapt_bounds(bounds or CK.BOUNDS["standard"], pol.supports)
    return EN.check(Model(b.config(), pol), b), notes


def test_standard_bounds_are_what_the_issue_asks_for():
    b = CK.BOUNDS["standard"]
    assert b.cpus >= 2 and b.vcpus == 1 and b.sve_tasks >= 1 and b.fpsimd_tasks >= 1
    assert {"softirq-neon", "migration", "signals", "sve"} <= b.features


@pytest.mark.parametrize("policy", sorted(SAFE))
def test_safe_designs_are_complete_without_violation(policy):
    res, _notes = check(policy)
    assert res.violation is None, res.violation
    assert res.complete
    assert res.states == SAFE[policy]


@pytest.mark.parametrize("policy", sorted(BROKEN))
def test_flawed_designs_are_caught(policy):
    res, _notes = check(policy)
    assert res.violation is not None
    assert res.violation["invariant"] in BROKEN[policy]


def test_martin_warn_as_posted_fires_at_the_first_binding():
    res, _ = check("martin-rfc-2018-posted")
    assert "WARN_ON(!in_softirq() || !irqs_disabled())" in res.violation["message"]
    assert res.depth <= 3


def test_tang_counterexample_is_the_preemption_objection():
    """Without softirqs, the shortest story is Marc Zyngier's: a preempted vCPU thread
    is scheduled back, vcpu_load restores guest FP over the other task's live state."""
    b = CK.Bounds(**{**CK.BOUNDS["standard"].__dict__,
                     "features": frozenset({"sve", "preempt", "migration", "exit-user"})})
    res, _ = check("tang-eager-2018", b)
    assert res.violation is not None and res.violation["invariant"] == "confidentiality"
    switches = [a for a in res.path if a[0] == SCHED]
    assert len(switches) >= 3, "the leak needs the vCPU thread preempted and scheduled back"


def test_deferred_stale_sysregs_is_caught_and_deferred_is_safe():
    b = CK.BOUNDS["sysregs"]
    for mode, broken in (("deferred", False), ("eager", False), ("deferred-stale", True)):
        bb = CK.Bounds(**{**b.__dict__, "sysregs": mode})
        res = EN.check(Model(bb.config(), P.get("upstream-6.14")), bb)
        assert (res.violation is not None) == broken, (mode, res.violation)
        if broken:
            assert "stale read" in res.violation["message"]


def test_deferred_stale_is_caught_at_standard_bounds():
    """The issue's list puts the deferred-stale variant among the violations at
    --bounds standard: the standard configuration with seed 001's sysregs on."""
    b = CK.Bounds(**{**CK.BOUNDS["standard"].__dict__, "sysregs": "deferred-stale",
                     "features": CK.BOUNDS["standard"].features | {"sysregs"}})
    res, _ = check("upstream-6.14", b)
    assert res.violation is not None and res.violation["invariant"] == "integrity"
    assert "stale read" in res.violation["message"]


def test_a_vmm_using_sve_breaks_brown_sve_2022_only():
    """Seed 003's fpsimd_kvm_prepare() converts a stale SVE image over the FPSIMD
    state a softirq just saved (the bug fbc7e61195e2 fixed in 2025); the designs
    before and after it keep the VMM's state."""
    b = CK.BOUNDS["kvm-vmm-sve"]
    bad, _ = check("brown-sve-2022", b)
    assert bad.violation is not None and bad.violation["invariant"] == "recoverability"
    assert bad.depth <= 6
    for safe in ("upstream-6.14", "upstream-4.18", "arm64-4.17"):
        res, _ = check(safe, b)
        assert res.complete and res.violation is None, (safe, res.violation)


def test_random_simulation_with_an_sve_vmm_agrees():
    from kvmctx import api

    hit = api.run("brown-sve-2022", "default", seed=0, events=100_000, knobs={"vmm_sve": 0.5})
    assert hit.metrics()["violations"] > 0
    for safe in ("upstream-6.14", "arm64-4.17"):
        r = api.run(safe, "default", seed=0, events=100_000, knobs={"vmm_sve": 0.5})
        assert r.metrics()["violations"] == 0, safe


def test_standard_with_the_trap_window_keeps_upstream_safe():
    """Issue 14: the trap window at standard (bounds standard-traps) costs 1.5x the
    states and changes no verdict (docs/checker.md has every design)."""
    res, _ = check("upstream-6.14", CK.BOUNDS["standard-traps"])
    assert res.complete and res.violation is None
    assert res.states == 9_854_514
