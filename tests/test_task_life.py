"""Vector-length changes (feature vl) and clone/exit (feature fork): issue 15 items 2-3."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kvmctx import policies as P
from kvmctx.catalogue import mutants as MU
from kvmctx.engines import canon as CN
from kvmctx.engines import checker as CK
from kvmctx.engines import engine as EN
from kvmctx.engines import story as ST
from kvmctx.model import host as H
from kvmctx.model.feat import task_life as TL
from kvmctx.model.machine import KVMRUN, MIGRATE, SCHED, STEP, SYSCALL, USVE, Model
from kvmctx.model.values import FP_STATE_FPSIMD, FP_STATE_SVE, GARBAGE, NO_CPU, ZERO, tag

MU.load_all()
NEW = ["clone-dead-binding", "clone-stale-fpsimd", "vl-change-stale"]
NEW_BOUNDS = ["host-vl", "host-vl-sme", "host-fork", "host-fork-reuse"]


def run(pol, b: CK.Bounds):
    b, _ = CK.adapt_bounds(b, pol.supports)
    m = Model(b.config(), pol)
    return EN.check(m, b), m, b


def _model(bounds: str, policy: str = "upstream-6.14") -> tuple[Model, list[int]]:
    b, _ = CK.adapt_bounds(CK.BOUNDS[bounds], P.get(policy).supports)
    m = Model(b.config(), P.get(policy))
    return m, m.new_state()


@pytest.mark.parametrize("name", NEW)
def test_new_mutant_is_found_with_its_catalogue_entry_and_replays(name):
    mu = MU.get(name)
    assert mu.catalogue in (32, 33, 34) and len(mu.source) == 12
    res, m, b = run(mu.build(), CK.BOUNDS[mu.bounds])
    assert res.violation is not None and res.violation["invariant"] == mu.invariant, name
    recs, _ = ST.replay(m, res.path, b.features)
    assert recs[-1].violations


@pytest.mark.parametrize("bounds", NEW_BOUNDS)
@pytest.mark.parametrize("policy", ["upstream-6.14", "arm64-4.17"])
def test_fixed_hosts_are_clean(policy, bounds):
    res, _, _ = run(P.get(policy), CK.BOUNDS[bounds])
    assert res.violation is None and res.complete


def test_dead_binding_needs_the_slot_reuse():
    """Without exit() there is no free slot to reuse: the v6.14 clone path is then clean."""
    mu = MU.get("clone-dead-binding")
    b = CK.BOUNDS["host-fork-reuse"]
    res, _, _ = run(mu.build(), CK.Bounds("no-exit", cpus=b.cpus, fpsimd_tasks=2, sve_tasks=0,
                                          vcpus=0, features=b.features,
                                          budgets=(("clone", 1), ("exit", 0), ("switch", 2))))
    assert res.violation is None and res.complete
    res, _, _ = run(mu.build(), b)
    assert "garbage" in res.violation["message"]


def test_dead_binding_is_redundant_after_e0cb0f26594c():
    """v6.16's arch_dup_task_struct() invalidates the parent's fpsimd_cpu before the
    copy, so copy_thread()'s flush (071b6d4a5d34) alone is no longer needed."""
    pol = P.get("upstream-6.14")
    pol = pol.but(host=pol.host.but(clone_flushes_task=False))
    res, _, _ = run(pol, CK.BOUNDS["host-fork-reuse"])
    assert res.violation is None and res.complete


def _to_el0(m, s, t, k=0):
    m.apply(s, (SCHED, k, t))
    m.apply(s, (STEP, k, 0))
    assert s[m.pc[t]] == m.L_USER


def test_prctl_changes_the_task_vl_and_the_reload_programs_it():
    m, s = _model("host-vl")
    t = 1
    assert s[m.tvq[t]] == m.ctx_vq[t] == 2
    _to_el0(m, s, t)
    m.apply(s, (USVE, 0, 0))
    assert s[m.vl[0]] == 2
    m.apply(s, (SYSCALL, 0, 0))
    m.apply(s, (TL.PRCTL_SVE_VL, 0, 0))
    assert s[m.tvq[t]] == 4 and s[m.foreign[t]] and s[m.fcpu[t]] == NO_CPU
    assert s[m.mem_lo[t]] == s[m.want_lo[t]]       # V0-V31 kept (49ce484187f7)
    m.apply(s, (STEP, 0, 0))                        # back to EL0: reload
    m.apply(s, (USVE, 0, 0))                        # traps (TIF_SVE dropped by the FPSIMD load)
    assert s[m.vl[0]] == 4 and s[m.bound_vl[0]] == 4
    m.apply(s, (SYSCALL, 0, 0))
    m.apply(s, (TL.PRCTL_SVE_VL, 0, 0))            # and back
    assert s[m.tvq[t]] == 2
    assert not m.vio, [v.message for v in m.vio]


def test_ptrace_vl_write_keeps_the_payload_at_the_new_vl():
    m, s = _model("host-vl")
    t = 1
    acts = m.enabled(s, CK.BOUNDS["host-vl"].features)
    assert (TL.PTRACE_SVE_VL, t, 0) in acts       # stopped at its syscall
    m.apply(s, (TL.PTRACE_SVE_VL, t, 0))
    assert s[m.tvq[t]] == 4 and s[m.fp_type[t]] == FP_STATE_SVE
    assert s[m.mem_zlo[t]] == s[m.want_lo[t]] == s[m.want_hi[t]]
    m.apply(s, (SCHED, 0, t))
    m.apply(s, (STEP, 0, 0))
    assert s[m.vl[0]] == 4 and not m.vio


def test_a_vl_change_that_keeps_the_binding_is_caught(monkeypatch):
    """The EL0 VL check: a change that forgets the invalidation runs at the old VL."""
    monkeypatch.setattr(TL.H, "fpsimd_flush_task_state", lambda m, s, t: None)
    m, s = _model("host-vl")
    _to_el0(m, s, 1)
    m.apply(s, (USVE, 0, 0))
    m.apply(s, (SYSCALL, 0, 0))
    m.apply(s, (TL.PRCTL_SVE_VL, 0, 0))
    m.apply(s, (STEP, 0, 0))
    assert any("runs SVE at VL256, its VL is 512" in v.message for v in m.vio)


def test_vl_state_feeds_the_save_vl_check():
    """The save's VL check reads the binding's VL, set from the task's VL state."""
    m, s = _model("host-vl")
    _to_el0(m, s, 1)
    m.apply(s, (USVE, 0, 0))
    s[m.vl[0]] = 4                                  # a live VL the binding does not expect
    H.fpsimd_save_user_state(m, s, 0)
    assert any("live VL 512 != expected VL 256" in v.message for v in m.vio)


def test_exit_frees_a_canonical_slot_and_scrubs_its_registers():
    m, s = _model("host-fork-reuse")
    t = 2
    _to_el0(m, s, t)
    m.apply(s, (SYSCALL, 0, 0))
    m.apply(s, (TL.EXIT, 0, 0))
    assert s[m.cur[0]] == 0 and s[m.rq[t]] == NO_CPU
    assert s[m.bound[0]] == t                       # the binding still names the dead task
    assert s[m.lo[0]] == GARBAGE
    for i in TL._slot_indices(m, t):
        if i not in (m.rq[t], m.pc[t], m.insys[t]):
            assert s[i] == m.init_state[i], m.layout.describe_index(i)
    feats = CK.BOUNDS["host-fork-reuse"].features
    acts = m.enabled(s, feats | {"migration"})
    assert not [a for a in acts if (a[0] == SCHED and a[2] == t)
                or (a[0] == MIGRATE and a[1] == t)]
    # Two runs that free either of the two identical slots are one canonical state.
    m2, s2 = _model("host-fork-reuse")
    _to_el0(m2, s2, 1)
    m2.apply(s2, (SYSCALL, 0, 0))
    m2.apply(s2, (TL.EXIT, 0, 0))
    c = CN.Canon(m)
    assert c.key(tuple(s)) == c.key(tuple(s2))


def test_clone_child_starts_in_the_kernel_with_the_parents_values():
    m, s = _model("host-fork-reuse")
    _to_el0(m, s, 2)
    m.apply(s, (SYSCALL, 0, 0))
    m.apply(s, (TL.EXIT, 0, 0))
    _to_el0(m, s, 1)
    m.apply(s, (SYSCALL, 0, 0))
    assert (TL.CLONE, 0, 2) in m.enabled(s, CK.BOUNDS["host-fork-reuse"].features)
    m.apply(s, (TL.CLONE, 0, 2))
    assert s[m.pc[2]] == m.L_SYS and s[m.rq[2]] == 0 and s[m.fcpu[2]] == NO_CPU
    assert s[m.mem_lo[2]] == s[m.want_lo[2]] and not m.vio
    m.apply(s, (SCHED, 0, 2))
    m.apply(s, (STEP, 0, 0))                        # ret_from_fork reloads the copy
    assert s[m.lo[0]] == s[m.want_lo[2]] and not m.vio


def test_fp_stress_churns_and_changes_vls_cleanly():
    from kvmctx import api

    r = api.run("upstream-6.14", "fp-stress", seed=1, events=20_000)
    c = r.counters
    assert r.sim.violations == 0
    assert c["task_clones"] > 0 and c["task_exits"] > 0 and c["vl_changes"] > 0
    assert c["clone_bytes"] == 520 * c["task_clones"]
    quiet = api.run("upstream-6.14", "fp-stress", seed=1, events=20_000,
                    knobs={"churn": 0.0, "vl_change": 0.0})
    assert not {"vl", "fork"} & quiet.workload.features()
    assert quiet.counters["task_clones"] == quiet.counters["vl_changes"] == 0
    # The copy is priced: churn costs more than the same run without the clones' bytes.
    from kvmctx.model import counters as C

    no_copy = list(r.sim.counters)
    no_copy[C.CLONE_BYTES] = 0
    assert r.profile.cycles(r.sim.counters)["saves"] > r.profile.cycles(no_copy)["saves"]


def test_asking_a_design_without_fork_for_churn_is_a_usage_error():
    from kvmctx import api

    with pytest.raises(api.UsageError, match="cannot model fork"):
        api.run("arm32-vfp-2012", "fp-stress", events=10, knobs={"churn": 0.1})
    with pytest.raises(api.UsageError, match="cannot model vmm-respawn"):
        api.run("arm32-vfp-2012", "default", events=10, knobs={"vcpu_respawn": 0.1})
    r = api.run("arm32-vfp-2012", "fp-stress", events=200)   # built in: left out, said so
    assert any("cannot model fork" in n for n in r.assumptions)


# ---------------------------------------------------------------- catalogue 39, 40
# a6d066f70574 and b87c8c4aca11: streaming mode inside a syscall, reached by a
# debugger's NT_ARM_SSVE write at the syscall stop (feature sme-regsets).

STREAMING = {"clone-keeps-sm": (39, "host-fork-sme", 5),
             "vl-change-fpsimd-streaming": (40, "host-vl-ssve", 7)}


def _fixed(**kw):
    pol = P.get("upstream-6.14")
    return pol.but(host=pol.host.but(**kw))


@pytest.mark.parametrize("name", sorted(STREAMING))
def test_streaming_mutants_are_found_at_their_depth_and_replay(name):
    cat, bounds, depth = STREAMING[name]
    mu = MU.get(name)
    assert (mu.catalogue, mu.bounds, len(mu.source)) == (cat, bounds, 12)
    res, m, b = run(mu.build(), CK.BOUNDS[bounds])
    assert res.violation["invariant"] == mu.invariant and len(res.path) == depth
    recs, _ = ST.replay(m, res.path, b.features)
    assert recs[-1].violations
    # Every step of the story is possible on the fixed host, and harmless there.
    recs, _ = ST.replay(Model(b.config(), P.get("upstream-6.14")), res.path, b.features)
    assert len(recs) == depth and not any(r.violations for r in recs)


@pytest.mark.parametrize("policy", ["upstream-6.14", "pkvm"])
def test_fixed_hosts_are_clean_at_host_fork_sme(policy):
    res, _, _ = run(P.get(policy), CK.BOUNDS["host-fork-sme"])
    assert res.violation is None and res.complete


def test_fixed_host_is_clean_at_host_vl_ssve():
    res, _, _ = run(P.get("upstream-6.14"), CK.BOUNDS["host-vl-ssve"])
    assert res.violation is None and res.complete


def _replay_to_last(pol, name):
    mu = MU.get(name)
    b = CK.BOUNDS[mu.bounds]
    res, _, _ = run(mu.build(), b)
    m = Model(b.config(), pol)
    s = m.new_state()
    for a in res.path:
        m.apply(s, a)
    return m, s, res.path[-1]


@pytest.mark.parametrize("clears", [True, False])
def test_clone_of_a_streaming_parent(clears):
    """task_smstop_sm(dst): the child starts with SM clear and V0-V31 zeroed; before
    a6d066f70574 it inherited SM in FPSIMD form with TIF_SME clear and no storage."""
    m, s, last = _replay_to_last(_fixed(clone_clears_sm=clears), "clone-keeps-sm")
    assert last[0] == TL.CLONE
    parent, u = s[m.cur[0]], last[2]
    assert s[m.svcr_sm[parent]] == 1 and s[m.fp_type[u]] == FP_STATE_FPSIMD
    assert s[m.svcr_sm[u]] == (0 if clears else 1) and not s[m.tif_sme[u]]
    assert s[m.want_sm[u]] == 0
    assert (s[m.mem_lo[u]] == ZERO) == clears
    if clears:
        m.apply(s, (SCHED, 0, u))
        m.apply(s, (STEP, 0, 0))                    # ret_from_fork, back to EL0
        assert s[m.pc[u]] == m.L_USER and s[m.sm[0]] == 0


@pytest.mark.parametrize("keeps", [True, False])
def test_sve_vl_change_of_a_streaming_task(keeps):
    """b87c8c4aca11 keeps fp_type SVE with SM set; before it the task went to FPSIMD
    form with SM still set, and its reload on a streaming CPU kept P/FFR live."""
    m, s, last = _replay_to_last(_fixed(vl_change_keeps_mode=keeps),
                                 "vl-change-fpsimd-streaming")
    t = s[m.cur[0]]
    assert s[m.svcr_sm[t]] == 1 and s[m.sm[0]] == 1 and s[m.pc[t]] == m.L_USER
    assert s[m.fp_type[t]] == (FP_STATE_SVE if keeps else FP_STATE_FPSIMD)
    assert (s[m.hi[0]] == ZERO) == keeps


def test_an_sme_vl_change_before_b87c8c4aca11_leaves_streaming_mode():
    """The ABI of the time (sme.rst: a change 'causes PSTATE.ZA and PSTATE.SM to be
    cleared', V0-V31 kept): the model follows it and reports nothing."""
    m, s = _model("host-vl-ssve", "upstream-6.14")
    m.hc = m.hc.but(vl_change_keeps_mode=False)
    t = 1
    s[m.svcr_sm[t]] = s[m.want_sm[t]] = 1
    s[m.fp_type[t]] = FP_STATE_SVE
    lo = s[m.want_lo[t]]
    s[m.mem_zlo[t]] = lo
    TL.change_vl(m, s, t, -1, True)
    assert (s[m.svcr_sm[t]], s[m.want_sm[t]], s[m.fp_type[t]]) == (0, 0, FP_STATE_FPSIMD)
    assert s[m.mem_lo[t]] == lo and not s[m.tif_sme[t]]


@pytest.mark.parametrize("was_streaming", [True, False])
def test_fpsimd_form_load_with_sm_set_keeps_predicates_only_on_a_streaming_cpu(was_streaming):
    m, s = _model("host-vl-ssve", "upstream-6.14")
    t, other = 1, 2
    s[m.svcr_sm[t]] = 1
    s[m.fp_type[t]] = FP_STATE_FPSIMD
    s[m.sm[0]] = 1 if was_streaming else 0
    stale = tag(other, 1)
    s[m.hi[0]] = stale
    H.task_fpsimd_load(m, s, 0, t)
    assert s[m.sm[0]] == 1 and s[m.lo[0]] == s[m.mem_lo[t]]
    assert s[m.hi[0]] == (stale if was_streaming else ZERO)


# ------------------------------------------------------------------ vmm-respawn


def test_vcpu_thread_respawn_is_reached_and_fixed_hosts_stay_clean():
    """kvm-vmm-respawn: a vCPU thread exits outside KVM_RUN and a new thread in its
    slot runs the same vCPU. The feature adds states (the respawn is reached), and
    the fixed hosts are safe and complete."""
    b = CK.BOUNDS["kvm-vmm-respawn"]
    without = CK.Bounds("no-respawn", cpus=b.cpus, fpsimd_tasks=b.fpsimd_tasks,
                        sve_tasks=0, vcpus=1, features=b.features - {"vmm-respawn"},
                        budgets=b.budgets)
    for policy in ("upstream-6.14", "upstream-4.18", "arm64-4.17", "martin-rfc-2018"):
        res, _, _ = run(P.get(policy), b)
        assert res.violation is None and res.complete, policy
        base, _, _ = run(P.get(policy), without)
        assert res.states > base.states, policy


def test_vcpu_thread_exits_only_outside_kvm_run_and_its_vcpu_outlives_it():
    m, s = _model("kvm-vmm-respawn")
    feats = CK.BOUNDS["kvm-vmm-respawn"].features
    vmm = next(t for t in range(1, m.nthreads) if m.vcpu_of[t] >= 0)
    v = m.vcpu_of[vmm]
    c = m.vctx[v]
    assert s[m.rq[vmm]] == 0
    _to_el0(m, s, vmm)
    assert (TL.EXIT, 0, 0) in m.enabled(s, feats)
    m.apply(s, (TL.EXIT, 0, 0))
    assert s[m.rq[vmm]] == NO_CPU and s[m.cur[0]] == 0
    assert s[m.want_lo[c]] == m.init_state[m.want_lo[c]]      # the vCPU is not reset
    # Inside KVM_RUN (vCPU loaded) the thread cannot exit.
    m2, s2 = _model("kvm-vmm-respawn")
    _to_el0(m2, s2, vmm)
    m2.apply(s2, (KVMRUN, 0, 0))
    while s2[m2.pc[vmm]] != m2.L_GUEST:
        assert (TL.EXIT, 0, 0) not in m2.enabled(s2, feats)
        m2.apply(s2, (STEP, 0, 0))
    assert (TL.EXIT, 0, 0) not in m2.enabled(s2, feats)


def test_clone_fills_the_vcpu_thread_slot_only_with_the_feature():
    m, s = _model("kvm-vmm-respawn")
    feats = CK.BOUNDS["kvm-vmm-respawn"].features
    vmm = next(t for t in range(1, m.nthreads) if m.vcpu_of[t] >= 0)
    _to_el0(m, s, vmm)
    m.apply(s, (TL.EXIT, 0, 0))
    host = next(t for t in range(1, m.nthreads) if m.vcpu_of[t] < 0)
    m.apply(s, (SCHED, 0, host))                  # the host task, inside its first syscall
    assert (TL.CLONE, 0, vmm) in m.enabled(s, feats)
    # Without the feature (fork alone, as at host-churn) a vCPU thread neither exits
    # nor is re-created.
    b = CK.BOUNDS["kvm-vmm-respawn"]
    cfg = b.config()
    m0 = Model(replace(cfg, features=cfg.features - {"vmm-respawn"}), P.get("upstream-6.14"))
    s0 = m0.new_state()
    _to_el0(m0, s0, vmm)
    assert (TL.EXIT, 0, 0) not in m0.enabled(s0, m0.config.features)
    m.apply(s, (TL.CLONE, 0, vmm))
    assert s[m.rq[vmm]] == 0 and s[m.pc[vmm]] == m.L_SYS


def test_dead_binding_mutant_is_found_through_a_vcpu_thread_slot():
    """clone-dead-binding (catalogue 32) needs only a reused slot: a vCPU thread's
    does, and the story names the clone into it."""
    b = CK.BOUNDS["kvm-vmm-respawn"]
    res, m, bb = run(MU.get("clone-dead-binding").build(), b)
    assert res.violation is not None and res.violation["invariant"] == "integrity"
    recs, _ = ST.replay(m, res.path, bb.features)
    assert any("clone(): a new thread in slot VMM0" in r.text for r in recs)


def test_simulator_respawns_vcpu_threads():
    from kvmctx import api

    r = api.run(P.get("upstream-6.14"), "default", seed=1, events=60_000,
                knobs={"vcpu_respawn": 0.05})
    assert r.counters["task_exits"] > 5
    assert r.counters["task_clones"] >= r.counters["task_exits"] - 2
    assert not r.sim.violations_by_invariant
