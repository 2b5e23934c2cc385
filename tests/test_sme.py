"""SME: streaming mode, ZA and SVCR on the host, what KVM must do about them, and
the catalogue entry the feature makes expressible (15, 01098d893fa8)."""

from __future__ import annotations

import pytest

from helpers import no_violations, run_to_rest, thread
from kvmctx import api, policies
from kvmctx.catalogue import mutants as MU
from kvmctx.engines import checker as CK
from kvmctx.engines import engine as EN
from kvmctx.model import counters as C
from kvmctx.model.config import ModelConfig, TaskSpec, VcpuSpec
from kvmctx.model.feat.sme import USER_SME, USER_SMSTOP
from kvmctx.model.flow import EXIT_USER, K_GUEST
from kvmctx.model.machine import GEXIT, GFP, KVMRUN, SCHED, STEP, SYSCALL, UFP, Model
from kvmctx.model.values import FP_STATE_SVE, ZERO
from kvmctx.policies.base import Step

FEATS = frozenset({"sme", "preempt", "exit-user", "softirq-neon"})


def check(pol, b):
    b, notes = CK.adapt_bounds(b, pol.supports)
    r = EN.check(Model(b.config(), pol), b)
    r.notes = notes
    return r


def sme_model(policy="upstream-6.14", svl=512) -> Model:
    tasks = (TaskSpec("Z", sme=True, svl=svl, cpu=0), TaskSpec("T", cpu=0),
             TaskSpec("VMM", vcpu=0, cpu=0))
    cfg = ModelConfig(cpus=1, tasks=tasks, vcpus=(VcpuSpec("V"),), features=FEATS)
    pol = policies.get(policy) if isinstance(policy, str) else policy
    return Model(cfg, pol)


def at_el0(m, s, t):
    m.apply(s, (SCHED, 0, t))
    m.apply(s, (STEP, 0, 0))
    assert s[m.pc[t]] == m.L_USER


def test_first_smstart_traps_then_streaming_mode_and_za_are_live():
    m = sme_model()
    s = m.new_state()
    z = thread(m, "Z")
    at_el0(m, s, z)
    m.apply(s, (USER_SME, 0, 0))
    assert m.ctr[C.HOST_SME_TRAPS] == 1 and s[m.tif_sme[z]] == 1 and s[m.smen[0]] == 1
    assert s[m.sm[0]] == 1 and s[m.za_on[0]] == 1 and s[m.svl[0]] == 4
    assert s[m.za[0]] == s[m.want_za[z]] == s[m.lo[0]] != ZERO
    m.apply(s, (USER_SME, 0, 0))
    assert m.ctr[C.HOST_SME_TRAPS] == 1, "with TIF_SME set EL0 SME no longer traps"
    no_violations(m)


def test_a_syscall_leaves_streaming_mode_but_keeps_za():
    m = sme_model()
    s = m.new_state()
    z = thread(m, "Z")
    at_el0(m, s, z)
    m.apply(s, (USER_SME, 0, 0))
    za = s[m.za[0]]
    m.apply(s, (SYSCALL, 0, 0))
    assert s[m.sm[0]] == 0 and s[m.lo[0]] == ZERO and s[m.want_lo[z]] == ZERO
    assert s[m.za_on[0]] == 1 and s[m.za[0]] == za
    run_to_rest(m, s, 0)
    no_violations(m)


def test_switch_saves_svcr_za_and_streaming_z_at_the_streaming_vl_and_reloads_them():
    m = sme_model(svl=512)
    s = m.new_state()
    z, t = thread(m, "Z"), thread(m, "T")
    at_el0(m, s, z)
    m.apply(s, (USER_SME, 0, 0))
    want = s[m.want_za[z]]
    before = m.ctr[C.BYTES_SAVED]
    m.apply(s, (SCHED, 0, t))
    assert s[m.svcr_sm[z]] == 1 and s[m.svcr_za[z]] == 1 and s[m.mem_za[z]] == want
    assert s[m.fp_type[z]] == FP_STATE_SVE and m.ctr[C.ZA_SAVES] == 1
    # ZA at SVL512 is 64 x 64 bytes + 64 of ZT0; Z/P/FFR at 512 bits: 2,048 + 136.
    assert m.ctr[C.BYTES_SAVED] - before == 4096 + 64 + 2048 + 136
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (UFP, 0, 0))           # T's own state clobbers the registers
    assert s[m.sm[0]] == 0 and s[m.za_on[0]] == 0 and s[m.za[0]] == ZERO
    m.apply(s, (SCHED, 0, z))
    assert s[m.sm[0]] == 1 and s[m.za_on[0]] == 1 and s[m.za[0]] == want
    assert s[m.svl[0]] == 4 and m.ctr[C.ZA_RESTORES] == 1
    no_violations(m)


def test_smstop_discards_streaming_state_and_za():
    m = sme_model()
    s = m.new_state()
    z = thread(m, "Z")
    at_el0(m, s, z)
    m.apply(s, (USER_SME, 0, 0))
    m.apply(s, (USER_SMSTOP, 0, 0))
    assert s[m.sm[0]] == s[m.za_on[0]] == 0 and s[m.lo[0]] == s[m.za[0]] == ZERO
    assert s[m.want_sm[z]] == s[m.want_zaon[z]] == 0
    no_violations(m)


def test_upstream_6_14_vcpu_load_leaves_streaming_mode_before_the_guest_runs():
    m = sme_model()
    s = m.new_state()
    v = thread(m, "VMM")
    z = thread(m, "Z")
    at_el0(m, s, z)
    m.apply(s, (USER_SME, 0, 0))
    m.apply(s, (SCHED, 0, v))
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (KVMRUN, 0, 0))
    while m.p_kind[s[m.pc[v]]] != K_GUEST:
        m.apply(s, (STEP, 0, 0))
    assert s[m.sm[0]] == 0 and s[m.za_on[0]] == 0
    m.apply(s, (GFP, 0, 0))
    m.apply(s, (GEXIT, 0, EXIT_USER))
    no_violations(m)


def _load_without_flush(p):
    from kvmctx.model import host as H

    def save_only(m, s, k, t):
        H.fpsimd_save_user_state(m, s, k)   # ... and no fpsimd_flush_cpu_state()

    return p.but(name="sme-no-flush", vcpu_load=(Step(save_only, "save, no flush"),)
                 + p.vcpu_load[1:])


def test_a_vcpu_load_that_does_not_flush_lets_the_guest_run_in_streaming_mode():
    """The guest check can fail: save without flush leaves PSTATE.SM/ZA on."""
    pol = _load_without_flush(policies.get("upstream-6.14"))
    b = CK.BOUNDS["kvm-sme"]
    r = check(pol, b)
    assert r.violation is not None and r.violation["invariant"] == "no-bug"
    assert "PSTATE.SM=1" in r.violation["message"]


def test_za_integrity_check_can_fail(monkeypatch):
    """Drop the ZA save on a context switch: the checker sees ZA lost or wrong."""
    from kvmctx.model import host as H

    real = H.fpsimd_save_user_state

    def forgetful(m, s, k):
        za = s[m.za[k]] if m.has_sme else None
        real(m, s, k)
        if m.has_sme and s[m.cur[k]] < m.nthreads and za is not None:
            c = s[m.bound[k]]
            if 0 < c < m.nthreads:
                s[m.mem_za[c]] = ZERO
    monkeypatch.setattr(H, "fpsimd_save_user_state", forgetful)
    r = check(policies.get("upstream-6.14"), CK.BOUNDS["kvm-sme"])
    assert r.violation is not None
    assert "ZA" in r.violation["message"] or "SME state" in r.violation["message"]


@pytest.mark.parametrize("policy", ["upstream-6.14", "pkvm"])
def test_designs_with_sme_are_safe_at_kvm_sme_bounds(policy):
    r = check(policies.get(policy), CK.BOUNDS["kvm-sme"])
    assert r.complete and r.violation is None and not r.notes


def test_catalogue_15_smstop_after_kernel_load_is_found_and_the_fix_is_safe():
    mu = MU.get("smstop-after-kernel-load")
    b = CK.BOUNDS[mu.bounds]
    bad = check(mu.build(), b)
    assert bad.violation is not None and bad.violation["invariant"] == "integrity"
    assert "kernel-NEON" in bad.violation["message"]
    good = check(policies.get("upstream-6.14"), b)
    assert good.complete and good.violation is None


def test_designs_without_sme_run_sme_tasks_as_plain_ones():
    r = api.run("arm64-4.17", "sme-host", seed=3, events=4000)
    assert r.metrics()["violations"] == 0
    assert any("no SME" in n for n in r.assumptions)
    assert r.counters["za_saves"] == 0


def test_sme_host_prices_za_in_every_save_upstream_makes_at_vcpu_load():
    r = api.run("upstream-6.14", "sme-host", seed=3, events=20000)
    assert r.metrics()["violations"] == 0
    assert r.counters["za_saves"] > 0 and r.counters["host_sme_traps"] >= 1
    with_za = r.metrics()["bytes_saved"]
    r2 = api.run("upstream-6.14", "sme-host", seed=3, events=20000, knobs={"svl": 128})
    assert r2.metrics()["bytes_saved"] < with_za, "ZA bytes scale with (SVL/8)^2"
