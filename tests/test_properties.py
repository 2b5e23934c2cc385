"""Property tests: random interleavings never break the invariants of safe designs,
and a deliberately broken design is caught."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers import ALL_FEATURES, examples, model
from kvmctx import policies
from kvmctx.model import host as H
from kvmctx.model.machine import SCHED, SIRQ, STEP, UFP

SAFE = ["upstream-6.14", "arm64-4.17"]


def walk(m, choices: list[int]) -> list[str]:
    """Follow enabled actions picked by `choices`; return violation messages."""
    s = m.new_state()
    for c in choices:
        acts = m.enabled(s, ALL_FEATURES)
        a = acts[c % len(acts)]
        m.apply(s, a)
        m.check_recoverable(s)
        if m.vio:
            return [f"{v.invariant}: {v.message}" for v in m.vio]
    return []


@pytest.mark.parametrize("policy", SAFE)
@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(choices=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=250))
def test_safe_policies_never_violate(policy, choices):
    m = model(policy, vcpu_sve=False)
    assert walk(m, choices) == []


@pytest.mark.parametrize("policy", SAFE)
@settings(max_examples=examples(60), deadline=None)
@given(choices=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=250))
@example(choices=[2, 0, 1, 0, 0, 0, 2])   # found by scripts/fuzz: see the test below
def test_safe_policies_with_sve_vcpus_and_kernel_neon(policy, choices):
    # SVE vCPUs where the design has them (v5.2+); FPSIMD ones otherwise, as the
    # checker's adapt_bounds does.
    m = model(policy, vcpu_sve="guest-sve" in policies.get(policy).supports, kneon=True,
              vcpus=1)
    assert walk(m, choices) == []


def test_arm64_4_17_is_not_given_an_sve_vcpu_it_cannot_express():
    """scripts/fuzz found this walk: the guest writes FPSIMD and exits; v4.17's
    world switch saves the 512-bit FPSIMD view, so an SVE vCPU's upper Z bits
    are lost. Not a v4.17 bug: KVM hid SVE from guests until v5.2 (the design
    has no "guest-sve"), so the property test must not give it one."""
    choices = [2, 0, 1, 0, 0, 0, 2]
    assert "guest-sve" not in policies.get("arm64-4.17").supports
    assert walk(model("arm64-4.17", vcpu_sve=False, kneon=True, vcpus=1), choices) == []
    assert walk(model("arm64-4.17", vcpu_sve=True, kneon=True, vcpus=1), choices) != []
    assert walk(model("upstream-6.14", vcpu_sve=True, kneon=True, vcpus=1), choices) == []


def forgetful_policy():
    """upstream-6.14 on a host whose kernel_neon_begin() flushes the CPU binding but
    forgets to set TIF_FOREIGN_FPSTATE (the bug class of d8ad71fa38a9)."""
    base = policies.get("upstream-6.14")
    return base.but(name="broken-no-foreign",
                    host=base.host.but(flush_cpu_sets_foreign=False,
                                       kernel_neon_sets_foreign=False))


def test_broken_policy_is_caught_on_a_hand_sequence():
    m = model(forgetful_policy())
    s = m.new_state()
    t1 = m.thread_names.index("T1")
    m.apply(s, (SCHED, 0, t1))
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (UFP, 0, 0))
    assert not m.vio
    m.apply(s, (SIRQ, 0, 0))  # kernel NEON clobbers; T1 returns to EL0 without reload
    assert m.vio and m.vio[0].invariant == "confidentiality"
    assert "softirq-NEON" in m.vio[0].message


@settings(max_examples=examples(200), deadline=None)
@given(choices=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=300))
def test_broken_policy_found_by_random_walks_sometimes(choices):
    # Not every walk hits it; this only checks walking never crashes the model.
    walk(model(forgetful_policy()), choices)


def test_broken_policy_found_by_simulation():
    from kvmctx import api

    r = api.run(forgetful_policy(), "default", seed=1, events=5000)
    assert r.metrics()["violations"] > 0
    assert set(r.sim.violations_by_invariant) & {"confidentiality", "integrity"}


def test_old_host_flags_break_the_modern_design():
    # upstream-6.14's KVM hooks rely on flushes setting TIF_FOREIGN_FPSTATE (v4.18+).
    base = policies.get("upstream-6.14")
    from kvmctx import api

    r = api.run(base.but(host=H.HOST_4_17), "default", seed=2, events=5000)
    assert r.metrics()["violations"] > 0
