"""Unit tests: the effect of each event on the state, on small hand sequences."""

from __future__ import annotations

from helpers import model, no_violations, run_to_rest, thread
from kvmctx.model import counters as C
from kvmctx.model.flow import EXIT_KERNEL, EXIT_USER
from kvmctx.model.machine import (
    GEXIT,
    GFP,
    KVMRUN,
    MIGRATE,
    SCHED,
    SIRQ,
    STEP,
    SYSCALL,
    UFP,
    USVE,
)
from kvmctx.model.values import FP_STATE_SVE, NO_CPU, NONE, ZERO, owner_of, tag, version_of
from kvmctx.policies.upstream_6_14 import FP_STATE_FREE, FP_STATE_GUEST_OWNED


def boot(m, s, k, t):
    """Switch thread t in on CPU k and return it to EL0."""
    m.apply(s, (SCHED, k, t))
    m.apply(s, (STEP, k, 0))
    assert s[m.pc[t]] == m.L_USER


def test_return_to_user_loads_and_binds():
    m = model()
    s = m.new_state()
    t1 = thread(m, "T1")
    m.apply(s, (SCHED, 0, t1))
    assert s[m.foreign[t1]] == 1, "nothing bound yet: the switch marks T1 foreign"
    m.apply(s, (STEP, 0, 0))
    assert s[m.lo[0]] == tag(t1, 1)
    assert s[m.bound[0]] == t1 and s[m.fcpu[t1]] == 0 and s[m.foreign[t1]] == 0
    assert m.ctr[C.RESTORES] == 1
    no_violations(m)


def test_user_fp_write_is_a_new_version_and_zeroes_upper_bits():
    m = model()
    s = m.new_state()
    t2 = thread(m, "T2")
    boot(m, s, 1, t2)
    m.apply(s, (USVE, 1, 0))  # first SVE use traps (do_sve_acc)
    assert m.ctr[C.HOST_SVE_TRAPS] == 1 and s[m.tif_sve[t2]] == 1 and s[m.zen[1]] == 1
    assert s[m.hi[1]] == s[m.want_hi[t2]] != ZERO
    m.apply(s, (UFP, 1, 0))
    assert version_of(s[m.lo[1]]) == 3 and owner_of(s[m.lo[1]]) == t2
    assert s[m.hi[1]] == ZERO == s[m.want_hi[t2]]
    no_violations(m)


def test_context_switch_saves_prev_and_keeps_binding_for_a_quick_return():
    m = model()
    s = m.new_state()
    t1 = thread(m, "T1")
    boot(m, s, 0, t1)
    m.apply(s, (UFP, 0, 0))
    m.apply(s, (SCHED, 0, 0))
    assert s[m.mem_lo[t1]] == s[m.want_lo[t1]], "switch-out saves the live state"
    restores = m.ctr[C.RESTORES]
    m.apply(s, (SCHED, 0, t1))
    assert s[m.foreign[t1]] == 0, "binding and fpsimd_cpu still match: no reload needed"
    assert m.ctr[C.RESTORES] == restores
    no_violations(m)


def test_migration_forces_a_reload_on_the_new_cpu():
    m = model()
    s = m.new_state()
    t1 = thread(m, "T1")
    boot(m, s, 0, t1)
    m.apply(s, (UFP, 0, 0))
    m.apply(s, (SCHED, 0, 0))
    m.apply(s, (MIGRATE, t1, 1))
    assert s[m.rq[t1]] == 1
    restores = m.ctr[C.RESTORES]
    m.apply(s, (SCHED, 1, t1))
    # T1 was preempted on its way to EL0; finishing ret_to_user on CPU1 reloads it.
    assert m.ctr[C.RESTORES] == restores + 1
    assert s[m.lo[1]] == s[m.want_lo[t1]] and s[m.fcpu[t1]] == 1 and s[m.bound[1]] == t1
    no_violations(m)


def test_softirq_neon_saves_flushes_and_user_reloads():
    m = model()
    s = m.new_state()
    t1 = thread(m, "T1")
    boot(m, s, 0, t1)
    m.apply(s, (UFP, 0, 0))
    saves = m.ctr[C.SAVES]
    m.apply(s, (SIRQ, 0, 0))
    assert m.ctr[C.SAVES] == saves + 1 and m.ctr[C.SOFTIRQ_NEON] == 1
    # ret_to_user after the interrupt reloaded T1's state and rebound it.
    assert s[m.lo[0]] == s[m.want_lo[t1]] and s[m.bound[0]] == t1
    no_violations(m)


def test_syscall_sve_discard_v4_17_vs_flush_v6_14():
    old = model("arm64-4.17")
    s = old.new_state()
    t2 = thread(old, "T2")
    boot(old, s, 1, t2)
    old.apply(s, (USVE, 1, 0))
    old.apply(s, (SYSCALL, 1, 0))
    assert s[old.tif_sve[t2]] == 0 and s[old.zen[1]] == 0, "v4.17 drops TIF_SVE and traps"
    assert s[old.hi[1]] != ZERO, "...but leaves the live upper bits in place"
    new = model("upstream-6.14")
    s = new.new_state()
    boot(new, s, 1, t2)
    new.apply(s, (USVE, 1, 0))
    new.apply(s, (SYSCALL, 1, 0))
    assert s[new.tif_sve[t2]] == 1 and s[new.zen[1]] == 1, "v6.2+ keeps SVE enabled"
    assert s[new.hi[1]] == ZERO and s[new.permit[t2]] == 1, "live upper bits flushed (ABI)"
    new.apply(s, (STEP, 1, 0))
    no_violations(new)
    no_violations(old)


def enter_guest(m, s, k, vt):
    boot(m, s, k, vt)
    m.apply(s, (UFP, k, 0))
    m.apply(s, (KVMRUN, k, 0))
    m.apply(s, (STEP, k, 0))
    run_to_rest(m, s, k)
    assert s[m.pc[vt]] == m.L_TOP
    m.apply(s, (STEP, k, 0))
    assert s[m.pc[vt]] == m.L_GUEST


def test_upstream_vcpu_load_saves_host_and_guest_trap_restores_guest():
    m = model()
    s = m.new_state()
    vt = thread(m, "V0-thread")
    v = m.vcpu_of[vt]
    c = m.vctx[v]
    boot(m, s, 0, vt)
    m.apply(s, (UFP, 0, 0))
    host_latest = s[m.want_lo[vt]]
    m.apply(s, (KVMRUN, 0, 0))
    m.apply(s, (STEP, 0, 0))
    assert s[m.mem_lo[vt]] == host_latest, "vcpu_load saved the host state"
    assert s[m.bound[0]] == NONE and s[m.foreign[vt]] == 1
    run_to_rest(m, s, 0)
    assert s[m.pf["fp_owner"][0]] == FP_STATE_FREE and s[m.vcpu_cpu[v]] == 0
    m.apply(s, (STEP, 0, 0))
    assert s[m.gtrap[0]] == 1, "the guest starts trapped"
    m.apply(s, (GFP, 0, 0))
    assert m.ctr[C.GUEST_FP_TRAPS] == 1 and s[m.gtrap[0]] == 0
    assert s[m.pf["fp_owner"][0]] == FP_STATE_GUEST_OWNED
    assert owner_of(s[m.lo[0]]) == c and version_of(s[m.lo[0]]) == 2
    m.apply(s, (GEXIT, 0, EXIT_KERNEL))
    assert s[m.bound[0]] == c and s[m.foreign[vt]] == 0, "ctxsync bound the guest state"
    assert s[m.pc[vt]] == m.L_POST
    # A softirq now saves the guest state into the vCPU through the host machinery.
    m.apply(s, (SIRQ, 0, 0))
    assert s[m.mem_lo[c]] == s[m.want_lo[c]] and s[m.foreign[vt]] == 1
    m.apply(s, (STEP, 0, 0))
    assert s[m.pc[vt]] == m.L_TOP
    m.apply(s, (STEP, 0, 0))
    assert s[m.gtrap[0]] == 1, "TIF_FOREIGN_FPSTATE made ctxflush drop ownership"
    m.apply(s, (GFP, 0, 0))
    assert m.ctr[C.GUEST_FP_TRAPS] == 2
    # Exit to the VMM: vcpu_put saves, ret_to_user reloads the VMM's state.
    m.apply(s, (GEXIT, 0, EXIT_USER))
    m.apply(s, (STEP, 0, 0))
    assert s[m.pc[vt]] == m.L_OUT
    m.apply(s, (STEP, 0, 0))
    run_to_rest(m, s, 0)
    assert s[m.mem_lo[c]] == s[m.want_lo[c]] and s[m.vcpu_cpu[v]] == NO_CPU
    m.apply(s, (STEP, 0, 0))
    assert s[m.pc[vt]] == m.L_USER and s[m.lo[0]] == host_latest
    no_violations(m)
    m.check_recoverable(s)
    no_violations(m)


def test_arm64_4_17_swaps_on_every_exit_after_use():
    m = model("arm64-4.17")
    s = m.new_state()
    vt = thread(m, "V0-thread")
    c = m.vctx[m.vcpu_of[vt]]
    enter_guest(m, s, 0, vt)
    host_latest = s[m.want_lo[vt]]
    m.apply(s, (GFP, 0, 0))
    assert s[m.pf["host_fpsimd"][0]] == host_latest, "hyp saved the host FPSIMD per CPU"
    saves = m.ctr[C.SAVES]
    m.apply(s, (GEXIT, 0, EXIT_KERNEL))
    assert m.ctr[C.SAVES] == saves + 1 and s[m.mem_lo[c]] == s[m.want_lo[c]]
    assert s[m.lo[0]] == host_latest, "host registers back before the host runs"
    # Re-entering traps again: nothing stayed live.
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (GFP, 0, 0))
    assert m.ctr[C.GUEST_FP_TRAPS] == 2
    no_violations(m)


def test_preemption_in_run_loop_puts_and_reloads_the_vcpu():
    m = model()
    s = m.new_state()
    vt = thread(m, "V0-thread")
    t1 = thread(m, "T1")
    v = m.vcpu_of[vt]
    c = m.vctx[v]
    enter_guest(m, s, 0, vt)
    m.apply(s, (GFP, 0, 0))
    m.apply(s, (GEXIT, 0, EXIT_KERNEL))
    m.apply(s, (STEP, 0, 0))
    assert s[m.pc[vt]] == m.L_TOP
    m.apply(s, (SCHED, 0, t1))  # kvm_sched_out -> vcpu_put
    assert s[m.vcpu_cpu[v]] == NO_CPU and s[m.mem_lo[c]] == s[m.want_lo[c]]
    assert s[m.pc[vt]] == m.L_SCHED_IN and s[m.resume[vt]] == m.L_TOP
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (UFP, 0, 0))
    m.apply(s, (SCHED, 0, vt))
    run_to_rest(m, s, 0)
    assert s[m.pc[vt]] == m.L_TOP and s[m.vcpu_cpu[v]] == 0, "kvm_sched_in reloaded"
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (GFP, 0, 0))
    no_violations(m)
    assert s[m.fp_type[c]] != FP_STATE_SVE
