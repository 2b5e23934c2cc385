"""vCPU reset and ONE_REG (feature vcpu-reset, one-reg) and FPMR (feature fpmr): issue 15."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kvmctx import policies as P
from kvmctx.catalogue import mutants as MU
from kvmctx.engines import checker as CK
from kvmctx.engines import engine as EN
from kvmctx.engines import story as ST
from kvmctx.model.feat import fpmr as FP
from kvmctx.model.feat import sme as SME
from kvmctx.model.feat import vcpu_reset as VR
from kvmctx.model.machine import KVMRUN, SCHED, STEP, SYSCALL, Model
from kvmctx.model.values import ZERO

MU.load_all()
NEW = ["reset-without-put", "one-reg-before-reset", "put-leaves-guest-live",
       "fpmr-before-svcr", "exec-keeps-fpmr", "ptrace-sve-keeps-tif-sve-clear",
       "sve-set-zeroes-tracer"]


def run(pol, b: CK.Bounds):
    b, _ = CK.adapt_bounds(b, pol.supports)
    m = Model(b.config(), pol)
    return EN.check(m, b), m, b


@pytest.mark.parametrize("name", NEW)
def test_new_mutant_is_found_with_its_invariant_and_replays(name):
    mu = MU.get(name)
    res, m, b = run(mu.build(), CK.BOUNDS[mu.bounds])
    assert res.violation is not None and res.violation["invariant"] == mu.invariant, name
    recs, _ = ST.replay(m, res.path, b.features)
    assert recs[-1].violations


@pytest.mark.parametrize("bounds", ["kvm-reset", "kvm-reset-fpmr", "host-fpmr",
                                    "host-ptrace-sve"])
@pytest.mark.parametrize("policy", ["upstream-6.14", "pkvm"])
def test_fixed_designs_are_clean(policy, bounds):
    res, _, _ = run(P.get(policy), CK.BOUNDS[bounds])
    assert res.violation is None and res.complete


def test_put_leaves_guest_live_is_caught_only_by_the_reset():
    """Without reset requests the lazy put is indistinguishable; with them it loses the reset."""
    mu = MU.get("put-leaves-guest-live")
    b = CK.BOUNDS["kvm-reset"]
    quiet = replace(b, name="kvm-reset-no-requests", features=b.features - {"vcpu-reset"})
    res, _, _ = run(mu.build(), quiet)
    assert res.violation is None and res.complete
    res, _, _ = run(mu.build(), b)
    assert res.violation is not None


def _model(policy: str, bounds: str) -> tuple[Model, list[int]]:
    b, _ = CK.adapt_bounds(CK.BOUNDS[bounds], P.get(policy).supports)
    m = Model(b.config(), P.get(policy))
    return m, m.new_state()


def _vmm(m: Model) -> int:
    return m.vthread[0]


def test_reset_request_is_served_in_the_run_loop_with_put_reset_load():
    m, s = _model("upstream-6.14", "kvm-reset")
    t = _vmm(m)
    c = m.vctx[0]
    m.apply(s, (SCHED, 0, t))
    m.apply(s, (STEP, 0, 0))          # returns to EL0
    m.apply(s, (KVMRUN, 0, 0))
    m.apply(s, (STEP, 0, 0))          # vcpu_load
    while s[m.pc[t]] != m.L_TOP:
        m.apply(s, (STEP, 0, 0))
    m.apply(s, (VR.PSCI_CPU_ON, 0, 0))
    assert s[m.reset_pending[0]] == 1
    names = []
    m.apply(s, (STEP, 0, 0))          # check_vcpu_requests -> kvm_reset_vcpu: put
    while s[m.pc[t]] != m.L_TOP:
        names.append(m.point_name(s[m.pc[t]]))
        assert m.p_sirq[s[m.pc[t]]] and not m.p_preempt[s[m.pc[t]]]
        m.apply(s, (STEP, 0, 0))
    assert s[m.reset_pending[0]] == 0
    assert s[m.mem_zlo[c]] == ZERO and s[m.want_lo[c]] == ZERO
    assert any("reset the image" in n for n in names)
    assert s[m.vcpu_cpu[0]] == 0       # loaded again
    assert not m.vio


def test_set_one_reg_writes_the_image_and_get_checks_it():
    m, s = _model("upstream-6.14", "kvm-reset")
    t = _vmm(m)
    c = m.vctx[0]
    m.apply(s, (SCHED, 0, t))
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (VR.SET_ONE_REG, 0, 0))
    assert s[m.pc[t]] == m.L_SYS and s[m.mem_zlo[c]] == s[m.want_lo[c]] != ZERO
    m.check_recoverable(s)
    assert not m.vio
    # The latest value live and bound on a CPU, the image lagging (guest state kept
    # live past vcpu_put): recoverable, but KVM_GET_ONE_REG reads the stale image.
    s[m.bound[0]] = c
    s[m.lo[0]] = s[m.hi[0]] = s[m.want_lo[c]]
    s[m.mem_zlo[c]] = ZERO
    m.check_recoverable(s)
    assert m.vio and "KVM_GET_ONE_REG" in m.vio[0].message


def test_pending_reset_is_served_by_set_one_reg():
    m, s = _model("upstream-6.14", "kvm-reset")
    t = _vmm(m)
    c = m.vctx[0]
    m.apply(s, (SCHED, 0, t))
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (VR.PSCI_CPU_ON, 0, 0))
    m.apply(s, (VR.SET_ONE_REG, 0, 0))
    assert s[m.reset_pending[0]] == 0           # served first (6826c6849b46)
    assert s[m.want_lo[c]] != ZERO              # the write survives
    m.check_recoverable(s)
    assert not m.vio


def test_streaming_mode_changes_zero_fpmr():
    m, s = _model("upstream-6.14", "host-fpmr")
    z = next(t for t in range(1, m.nthreads) if m.task_sme[t])
    m.apply(s, (SCHED, 0, z))
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (FP.USER_FPMR, 0, 0))
    assert s[m.fpmr[0]] == s[m.want_fpmr[z]] != ZERO
    m.apply(s, (SME.USER_SME, 0, 0))             # SMSTART: SM 0 -> 1
    assert s[m.fpmr[0]] == s[m.want_fpmr[z]] == ZERO
    m.apply(s, (FP.USER_FPMR, 0, 0))
    m.apply(s, (SYSCALL, 0, 0))                  # a syscall leaves streaming mode
    assert s[m.fpmr[0]] == s[m.want_fpmr[z]] == ZERO
    assert not m.vio


def test_fpmr_is_saved_through_the_binding_and_reloaded():
    m, s = _model("upstream-6.14", "host-fpmr")
    t1 = 1
    m.apply(s, (SCHED, 0, t1))
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (FP.USER_FPMR, 0, 0))
    x = s[m.fpmr[0]]
    other = next(t for t in range(1, m.nthreads) if t != t1 and m.vcpu_of[t] < 0)
    m.apply(s, (SCHED, 0, other))
    assert s[m.mem_fpmr[t1]] == x
    m.apply(s, (STEP, 0, 0))                     # other returns to EL0: its FPMR loaded
    assert s[m.fpmr[0]] == s[m.mem_fpmr[other]]
    m.apply(s, (SCHED, 0, t1))
    assert s[m.fpmr[0]] == x and not m.vio


def test_designs_before_fpmr_leave_the_feature_out():
    b, notes = CK.adapt_bounds(CK.BOUNDS["host-fpmr"], P.get("upstream-4.18").supports)
    assert "fpmr" not in b.features and any("fpmr" in n for n in notes)


def test_standard_program_is_unchanged_by_the_new_features():
    """The features add program points only when on: standard keeps its program."""
    pol = P.get("upstream-6.14")
    m = Model(CK.BOUNDS["standard"].config(), pol)
    assert "VRESET" not in m.prog.labels and not m.has_fpmr


def test_simulator_scenario_runs_clean_and_catches_the_reset_mutants():
    from kvmctx import api

    ok = api.run("upstream-6.14", "vcpu-lifecycle", seed=1, events=20000)
    c = ok.counters
    assert c["vcpu_resets"] > 0 and c["one_reg_writes"] > 0 and c["fpmr_writes"] > 0
    assert ok.metrics()["violations"] == 0
    old = api.run("brown-sve-2022", "vcpu-lifecycle", seed=1, events=4000)
    assert old.counters["fpmr_writes"] == 0 and old.metrics()["violations"] == 0
    for name in ("put-leaves-guest-live", "reset-without-put"):
        bad = api.run(MU.get(name).build(), "vcpu-lifecycle", seed=1, events=40000)
        assert bad.metrics()["violations"] > 0, name


def test_knobs_are_validated():
    from kvmctx.workloads.workload import validate_knob

    assert validate_knob("vcpu_reset", "0.5") == 0.5
    with pytest.raises(ValueError):
        validate_knob("fpmr", 2)


def test_nt_prfpreg_write_zero_pads_the_sve_image():
    from kvmctx.model.feat import host_life as HL
    from kvmctx.model.machine import USVE

    m, s = _model("upstream-6.14", "host-ptrace-sve")
    u = next(t for t in range(1, m.nthreads) if m.task_sve[t])
    m.apply(s, (SCHED, 0, u))
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (USVE, 0, 0))                     # SVE state with live upper bits
    m.apply(s, (SCHED, 0, _vmm(m)))              # saved in SVE form, u stopped
    assert s[m.mem_hi[u]] != ZERO
    m.apply(s, (HL.PTRACE_FP, u, 0))
    assert s[m.mem_hi[u]] == ZERO and s[m.want_hi[u]] == ZERO
    assert s[m.mem_zlo[u]] == s[m.mem_lo[u]] == s[m.want_lo[u]]
    m.apply(s, (SCHED, 0, u))                    # back at EL0: reloaded, upper bits zero
    assert s[m.pc[u]] == m.L_USER and s[m.hi[0]] == ZERO
    m.check_cpu(s, 0)
    m.check_recoverable(s)
    assert not m.vio


def test_nt_arm_fpmr_write_reaches_the_task():
    m, s = _model("upstream-6.14", "host-fpmr")
    t1 = 1
    running: set[int] = set()
    out: list[tuple[int, int, int]] = []
    FP._ptrace_enabled(m, s, running, out)
    assert (FP.PTRACE_FPMR, t1, 0) in out
    m.apply(s, (FP.PTRACE_FPMR, t1, 0))
    x = s[m.want_fpmr[t1]]
    assert x != ZERO and s[m.mem_fpmr[t1]] == x
    m.apply(s, (SCHED, 0, t1))
    m.apply(s, (STEP, 0, 0))                     # ret_to_user reloads FPMR
    assert s[m.fpmr[0]] == x and not m.vio


def test_finding_martin_rfc_keeps_the_guest_bound_past_put_and_the_reset_catches_it():
    """docs/checker.md: the RFC has no vcpu_put hook; a reset rewrites the image
    while the binding survives, and the guest re-enters untrapped on stale values."""
    pol = P.get("martin-rfc-2018")
    b = CK.BOUNDS["kvm-reset"]
    res, _, _ = run(pol, b)
    assert res.violation is not None and res.violation["invariant"] == "integrity"
    quiet = replace(b, name="kvm-reset-no-requests", features=b.features - {"vcpu-reset"})
    res, _, _ = run(pol, quiet)
    assert res.violation is None and res.complete
