"""Each policy's distinguishing behaviour, pinned on small hand-written sequences."""

from __future__ import annotations

import pytest

from helpers import model, no_violations, run_to_rest, thread
from kvmctx import api
from kvmctx import policies as P
from kvmctx.model import counters as C
from kvmctx.model.config import ModelConfig, TaskSpec, VcpuSpec
from kvmctx.model.flow import EXIT_KERNEL, EXIT_USER
from kvmctx.model.machine import GEXIT, GFP, KVMRUN, SCHED, STEP, SYSCALL, UFP, USVE, Model
from kvmctx.model.values import FP_STATE_FPSIMD, owner_of


def boot(m, s, k, t):
    m.apply(s, (SCHED, k, t))
    m.apply(s, (STEP, k, 0))
    run_to_rest(m, s, k)


def into_guest(m, s, k, vt):
    """From EL0: KVM_RUN, vcpu_load, enter the guest."""
    m.apply(s, (KVMRUN, k, 0))
    m.apply(s, (STEP, k, 0))
    run_to_rest(m, s, k)
    assert s[m.pc[vt]] == m.L_TOP
    m.apply(s, (STEP, k, 0))
    assert s[m.pc[vt]] == m.L_GUEST


def reenter(m, s, k, vt):
    """From POST after an in-kernel exit, back into the guest."""
    m.apply(s, (STEP, k, 0))
    assert s[m.pc[vt]] == m.L_TOP
    m.apply(s, (STEP, k, 0))
    assert s[m.pc[vt]] == m.L_GUEST


def fp_run_then_exit(policy, sve_task=False):
    m = model(policy, sve_task=sve_task)
    s = m.new_state()
    vt = thread(m, "V0-thread")
    boot(m, s, 0, vt)
    m.apply(s, (UFP, 0, 0))
    into_guest(m, s, 0, vt)
    m.apply(s, (GFP, 0, 0))
    return m, s, vt


def test_arm64_4_17_swaps_back_at_every_exit_and_traps_again():
    m, s, vt = fp_run_then_exit("arm64-4.17")
    for _ in range(3):
        traps, restores = m.ctr[C.GUEST_FP_TRAPS], m.ctr[C.RESTORES]
        m.apply(s, (GEXIT, 0, EXIT_KERNEL))
        assert m.ctr[C.RESTORES] == restores + 1, "host FPSIMD restored at the exit"
        reenter(m, s, 0, vt)
        m.apply(s, (GFP, 0, 0))
        assert m.ctr[C.GUEST_FP_TRAPS] == traps + 1, "every run that uses FP traps again"
    no_violations(m)


def test_martin_rfc_keeps_the_guest_bound_no_host_restore_no_retrap():
    m, s, vt = fp_run_then_exit("martin-rfc-2018")
    v = m.vcpu_of[vt]
    c = m.vctx[v]
    traps, restores, saves = (m.ctr[C.GUEST_FP_TRAPS], m.ctr[C.RESTORES], m.ctr[C.SAVES])
    m.apply(s, (GEXIT, 0, EXIT_KERNEL))
    assert m.ctr[C.RESTORES] == restores, "no host restore at exit (the host reloads lazily)"
    assert m.ctr[C.SAVES] > saves, "the guest is still saved before IRQs are enabled"
    assert s[m.bound[0]] == c and s[m.foreign[vt]] == 1
    reenter(m, s, 0, vt)
    assert s[m.gtrap[0]] == 0, "still bound here: re-entry without a trap"
    m.apply(s, (GFP, 0, 0))
    assert m.ctr[C.GUEST_FP_TRAPS] == traps
    no_violations(m)


def test_martin_rfc_as_posted_warns_on_the_first_return_to_user():
    m = model("martin-rfc-2018-posted", sve_task=False)
    s = m.new_state()
    m.apply(s, (SCHED, 0, thread(m, "T1")))
    m.apply(s, (STEP, 0, 0))
    assert m.vio and "WARN_ON(!in_softirq() || !irqs_disabled())" in m.vio[0].message


def test_upstream_4_18_guest_live_across_kernel_exits_saved_at_put():
    m, s, vt = fp_run_then_exit("upstream-4.18")
    c = m.vctx[m.vcpu_of[vt]]
    saves = m.ctr[C.SAVES]
    m.apply(s, (GEXIT, 0, EXIT_KERNEL))
    assert m.ctr[C.SAVES] == saves, "no save at the exit"
    assert s[m.bound[0]] == c and s[m.foreign[vt]] == 0, "bound to the CPU, host will save it"
    reenter(m, s, 0, vt)
    assert s[m.gtrap[0]] == 0
    m.apply(s, (GEXIT, 0, EXIT_USER))
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (STEP, 0, 0))
    run_to_rest(m, s, 0)
    assert m.ctr[C.SAVES] == saves + 1 and s[m.mem_lo[c]] == s[m.want_lo[c]], "saved at put"
    no_violations(m)


def test_upstream_6_14_saves_host_at_load_even_without_guest_fp():
    m = model("upstream-6.14", sve_task=False)
    s = m.new_state()
    vt = thread(m, "V0-thread")
    boot(m, s, 0, vt)
    m.apply(s, (UFP, 0, 0))
    saves = m.ctr[C.SAVES]
    into_guest(m, s, 0, vt)
    assert m.ctr[C.SAVES] == saves + 1
    old = model("upstream-4.18", sve_task=False)
    s2 = old.new_state()
    boot(old, s2, 0, vt)
    old.apply(s2, (UFP, 0, 0))
    saves = old.ctr[C.SAVES]
    into_guest(old, s2, 0, vt)
    assert old.ctr[C.SAVES] == saves, "v4.18 saves the host only when the guest uses FP"


def test_tang_eager_restores_at_vcpu_load_after_a_trapping_run():
    m, s, vt = fp_run_then_exit("tang-eager-2018")
    v = m.vcpu_of[vt]
    c = m.vctx[v]
    assert s[m.pf["last_fpsimd_trap"][v]] == 1
    m.apply(s, (GEXIT, 0, EXIT_USER))
    for _ in range(4):
        m.apply(s, (STEP, 0, 0))
        run_to_rest(m, s, 0)
        if s[m.pc[vt]] == m.L_USER:
            break
    eager = m.ctr[C.EAGER_RESTORES]
    m.apply(s, (KVMRUN, 0, 0))
    m.apply(s, (STEP, 0, 0))
    run_to_rest(m, s, 0)
    assert m.ctr[C.EAGER_RESTORES] == eager + 1
    assert owner_of(s[m.lo[0]]) == c, "guest registers live before the guest runs"
    traps = m.ctr[C.GUEST_FP_TRAPS]
    m.apply(s, (STEP, 0, 0))
    m.apply(s, (GFP, 0, 0))
    assert m.ctr[C.GUEST_FP_TRAPS] == traps, "no trap on the eagerly restored run"


def test_tang_eager_leaks_guest_values_to_a_preempted_task():
    """Marc Zyngier's objection: 'I can't see how this works when being preempted'."""
    from kvmctx.engines.checker import BOUNDS, Checker

    b = BOUNDS["standard"]
    m = Model(b.config(), P.get("tang-eager-2018"))
    res = Checker(m, b).run()
    assert res.violation is not None
    assert res.violation["invariant"] in ("confidentiality", "integrity")
    from kvmctx.model.machine import SCHED as SCHED_KIND

    assert any(a[0] == SCHED_KIND for a in res.path), "needs a context switch"


def test_pkvm_never_leaves_guest_values_in_the_host():
    m, s, vt = fp_run_then_exit("pkvm")
    c = m.vctx[m.vcpu_of[vt]]
    m.apply(s, (GEXIT, 0, EXIT_KERNEL))
    assert owner_of(s[m.lo[0]]) != c, "hyp restored the host's registers at the exit"
    assert s[m.mem_lo[c]] == s[m.want_lo[c]]
    m.check_recoverable(s)
    no_violations(m)
    r = api.run("pkvm", "kvm-stress", seed=3, events=20000)
    assert r.metrics()["violations"] == 0


def test_dall_flag_is_never_cleared_and_host_state_is_stashed_in_the_vcpu():
    m, s, vt = fp_run_then_exit("dall-tif-2018")
    v = m.vcpu_of[vt]
    host_latest = s[m.want_lo[vt]]
    assert s[m.pf["kvm_guest_fpstate"][vt]] == 1
    assert s[m.pf["host_fpsimd_state"][v]] == host_latest, "host state stashed in the vCPU"
    m.apply(s, (GEXIT, 0, EXIT_USER))
    for _ in range(4):
        m.apply(s, (STEP, 0, 0))
        run_to_rest(m, s, 0)
        if s[m.pc[vt]] == m.L_USER:
            break
    assert s[m.pf["kvm_guest_fpstate"][vt]] == 1, "flag never cleared (the list's objection)"
    assert s[m.mem_lo[vt]] == host_latest, "host state copied back on KVM_RUN return"


def sve_vmm_model(policy):
    cfg = ModelConfig(cpus=1, tasks=(TaskSpec("S", sve=True, vl=256),),
                      features=frozenset({"sve"}))
    return Model(cfg, P.get(policy))


def test_brown_keeps_sve_across_a_syscall_without_a_switch():
    m = sve_vmm_model("brown-sve-2022")
    s = m.new_state()
    boot(m, s, 0, 1)
    m.apply(s, (USVE, 0, 0))
    upper = s[m.hi[0]]
    m.apply(s, (SYSCALL, 0, 0))
    assert s[m.tif_sve[1]] == 1 and s[m.hi[0]] == upper, "SVE enabled, state not flushed"
    # A context switch inside the syscall saves only the FPSIMD view.
    m.apply(s, (SCHED, 0, 0))
    assert s[m.fp_type[1]] == FP_STATE_FPSIMD
    no_violations(m)
    d = sve_vmm_model("brown-sve-2022-discard")
    s = d.new_state()
    boot(d, s, 0, 1)
    d.apply(s, (USVE, 0, 0))
    d.apply(s, (SYSCALL, 0, 0))
    assert s[d.tif_sve[1]] == 0, "the sysctl restores discard-on-syscall"


def test_arm32_pushes_and_pops_fpexc_en():
    cfg = ModelConfig(cpus=1, tasks=(TaskSpec("T1"), TaskSpec("VMM", vcpu=0)),
                      vcpus=(VcpuSpec("vcpu0"),), features=frozenset({"vfp-subarch"}))
    m = Model(cfg, P.get("arm32-vfp-2012"))
    s = m.new_state()
    vt = 2
    boot(m, s, 0, vt)
    assert s[m.vfp_en[0]] == 0, "arm32 loads lazily: VFP disabled until the first use"
    m.apply(s, (UFP, 0, 0))
    assert s[m.vfp_en[0]] == 1
    into_guest(m, s, 0, vt)
    m.apply(s, (GFP, 0, 0))
    from kvmctx.model.feat.vfp_subarch import GVFP_BOUNCE

    m.apply(s, (GVFP_BOUNCE, 0, 0))
    c = m.vctx[0]
    m.apply(s, (GEXIT, 0, EXIT_KERNEL))
    assert s[m.mem_vfp_ex[c]] == 1 and s[m.mem_vfp_inst[c]] == s[m.want_inst[c]], \
        "FPINST saved because FPEXC.EX was set"
    assert s[m.vfp_ex[0]] == 0 and s[m.vfp_en[0]] == 1, "host's FPEXC (EN) popped back"
    no_violations(m)


@pytest.mark.parametrize("name", P.names())
def test_every_policy_runs_every_scenario(name):
    from kvmctx.workloads.scenarios import SCENARIOS

    for sc in SCENARIOS:
        r = api.run(name, sc, seed=1, events=1500)
        assert r.events == 1500 and r.metrics()["guest_exits"] >= 0
