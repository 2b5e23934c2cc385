"""Signal frames for every kind of task (issue 15 item 1, feature sig-frames)."""

from __future__ import annotations

import random

import pytest

from kvmctx import policies as P
from kvmctx.catalogue import mutants as MU
from kvmctx.engines import checker as CK
from kvmctx.engines import engine as EN
from kvmctx.model.feat import signals as SG
from kvmctx.model.machine import STEP, Model

MU.load_all()

# mutant -> (catalogue entry, invariant, greatest depth seen at host-sig)
FOUND = {
    "sigframe-by-tif-sve": (7, "integrity", 5),
    "sigreturn-merge-by-tif-sve": (8, "recoverability", 7),
    "setup-return-live-smstop": (9, "integrity", 7),
    "sigreturn-sm-without-tif-sme": (11, "no-bug", 9),
    "sigreturn-za-without-sve-storage": (12, "no-bug", 9),
    "signal-fpmr-live": (29, "confidentiality", 6),
}

SVE_SIG = CK.Bounds("sve-sig", cpus=1, fpsimd_tasks=1, sve_tasks=1, vcpus=0,
                    features=frozenset({"sve", "signals", "sig-frames", "preempt"}),
                    budgets=(("signal", 2), ("switch", 2)))


def _check(pol, b):
    b, _ = CK.adapt_bounds(b, pol.supports)
    m = Model(b.config(), pol)
    return m, EN.check(m, b)


@pytest.mark.parametrize("name", sorted(FOUND))
def test_each_signal_mutant_is_found_at_host_sig(name):
    mu = MU.get(name)
    cat, inv, depth = FOUND[name]
    assert mu.catalogue == cat and mu.bounds == "host-sig"
    _m, r = _check(mu.build(), CK.BOUNDS["host-sig"])
    assert r.violation is not None and r.violation["invariant"] == inv
    assert r.depth <= depth


def test_catalogue_signal_entries_are_no_longer_listed_as_not_expressed():
    assert not {7, 8, 9, 11, 12} & set(MU.NOT_EXPRESSED)


def test_upstream_is_safe_with_sve_frames_and_the_tif_sve_frame_is_not():
    """Entry 7's main story: a save inside a syscall stores V0-V31 only, TIF_SVE stays
    set; the pre-61da7c8e2a60 frame takes both records from the stale sve_state."""
    _m, ok = _check(P.get("upstream-6.14"), SVE_SIG)
    assert ok.complete and ok.violation is None
    m, bad = _check(MU.get("sigframe-by-tif-sve").build(), SVE_SIG)
    assert bad.violation["invariant"] == "integrity"
    assert "signal frame of S1" in bad.violation["message"]


def test_live_smstop_hits_registers_bound_to_another_task():
    """Entry 9: when setup_return() runs, the CPU's registers are bound to the
    streaming task, not to the one being signalled (it is in the kernel, its own
    state in memory), and the live SMSTOP clears them under that binding."""
    mu = MU.get("setup-return-live-smstop")
    b = CK.BOUNDS["host-sig"]
    m = Model(b.config(), mu.build())
    r = EN.check(m, b)
    s = m.new_state()
    seen = False
    for a in map(tuple, r.path):
        if a[0] == STEP:
            t = s[m.cur[a[1]]]
            if s[m.pc[t]] == m.L_SIG_DELIVER:
                victim = s[m.bound[a[1]]]
                assert victim not in (0, t) and s[m.sm[a[1]]] == 1
                seen = True
        m.apply(s, a)
    assert seen and r.violation["message"].startswith(m.tname(victim))


def test_fpmr_record_is_read_after_a_switch_before_929fa99b1215():
    m, r = _check(MU.get("signal-fpmr-live").build(), CK.BOUNDS["host-sig"])
    assert "FPMR record" in r.violation["message"]


def test_small_signals_feature_is_unchanged_without_sig_frames():
    """Without sig-frames an SVE task takes no signals (the standard bounds' model)."""
    b = CK.Bounds("x", cpus=1, fpsimd_tasks=1, sve_tasks=1, vcpus=0,
                  features=frozenset({"sve", "signals"}))
    m = Model(b.config(), P.get("upstream-6.14"))
    assert not hasattr(m, "sig_zlo")
    s = m.new_state()
    for k_t in (1, 2):
        s[m.cur[0]] = k_t
        s[m.pc[k_t]] = m.L_USER
        kinds = {a[0] for a in m.enabled(s, b.features)}
        assert (SG.SIGNAL in kinds) == (k_t == 1)


def test_vmm_thread_takes_signals_at_kvm_run_return_with_sig_frames():
    b = CK.Bounds("x", cpus=1, fpsimd_tasks=0, sve_tasks=0, vcpus=1,
                  features=frozenset({"signals", "sig-frames"}))
    m = Model(b.config(), P.get("upstream-6.14"))
    s = m.new_state()
    s[m.cur[0]] = 1
    s[m.pc[1]] = m.L_RET
    assert (SG.SIGNAL, 0, 0) in m.enabled(s, b.features)


def test_random_runs_on_host_sig_keep_upstream_clean():
    """Random walks over every sig-frames event (edits and forged records included)."""
    b = CK.BOUNDS["host-sig"]
    pol = P.get("upstream-6.14")
    m = Model(b.config(), pol)
    rng = random.Random(1)
    for _ in range(30):
        s = m.new_state()
        for _ in range(60):
            acts = m.enabled(s, b.features)
            m.apply(s, rng.choice(acts))
            m.check_recoverable(s)
            assert not m.vio, m.vio


@pytest.mark.parametrize(("knob", "kind"), [("sig_fpsimd", "fpsimd"), ("sig_sve", "sve"),
                                            ("sig_sme", "sme")])
def test_signal_rate_knobs_signal_only_their_kind_of_task(knob, kind):
    """fp-stress's irritator: each knob signals the testers of one kind; the frames
    cost at least their FPSIMD record and headers, more with SVE/ZA payloads."""
    from kvmctx import api
    from kvmctx.engines.simulator import Simulator
    from kvmctx.model import counters as C

    _n, w = api.resolve_workload("fp-stress", None)
    w = w.with_knobs(**{**{"sig_fpsimd": 0.0, "sig_sve": 0.0, "sig_sme": 0.0}, knob: 0.2})
    m = Model(w.model_config(), P.get("upstream-6.14"))
    got = []
    deliver = SG._deliver

    def spy(m_, s, a):
        t = s[m_.cur[a[1]]]
        got.append("sme" if m_.task_sme[t] else "sve" if m_.task_sve[t] else "fpsimd")
        deliver(m_, s, a)

    SG._deliver = spy
    try:
        sim = Simulator(m, w, seed=0)
        sim.run(8000)
    finally:
        SG._deliver = deliver
    assert sim.viol_count == 0 and got and set(got) == {kind}
    per = m.ctr[C.SIGFRAME_BYTES] / m.ctr[C.SIGNALS]
    assert per >= 528 + 16 + 32
    if kind != "fpsimd":
        assert per > 2 * (528 + 16 + 32)   # SVE / streaming payloads, ZA


def test_signal_knobs_are_probabilities():
    from kvmctx.workloads.workload import validate_knob

    assert validate_knob("sig_sme", "0.5") == 0.5
    with pytest.raises(ValueError, match="sig_sve"):
        validate_knob("sig_sve", 2)


@pytest.mark.parametrize("mutant", [None, "sigreturn-merge-by-tif-sve"])
def test_catalogue_8_story_an_sme_tasks_own_streaming_frame(mutant):
    """bug-catalogue.md 8 as written: Z1 in streaming mode (TIF_SVE clear) takes a
    signal, its handler edits V0-V31 in the FPSIMD record, rt_sigreturn restores the
    streaming SVE record; only the fp_type rule merges the edit."""
    from kvmctx.model.feat.sme import USER_SME
    from kvmctx.model.machine import SCHED

    b = CK.BOUNDS["host-sig"]
    pol = MU.get(mutant).build() if mutant else P.get("upstream-6.14")
    m = Model(b.config(), pol)
    z1 = m.thread_names.index("Z1")
    s = m.new_state()
    for a in [(SCHED, 0, z1), (STEP, 0, 0), (USER_SME, 0, 0), (SG.SIGNAL, 0, 0), (STEP, 0, 0),
              (STEP, 0, 0), (SG.SIG_EDIT_FPSIMD, 0, 0), (SG.SIGRETURN, 0, 0), (STEP, 0, 0),
              (STEP, 0, 0)]:
        assert a in m.enabled(s, b.features), m.action_text(s, a)
        m.apply(s, a)
    assert s[m.sm[0]] == 1 and s[m.tif_sve[z1]] == 0
    bad = [v for v in m.vio if v.invariant == "integrity"]
    assert bool(bad) == bool(mutant), m.vio
    if mutant:
        assert "FPSIMD V0-V31" in bad[0].message


def test_tif_sve_without_sve_state_is_a_null_save() -> None:
    """do_sve_acc() allocates thread.sve_state before it sets TIF_SVE: without the
    allocation the task runs SVE at EL0 and its next save writes through NULL."""
    from kvmctx.catalogue import mutants as MU
    from kvmctx.engines import mutation as MT

    MU.names()
    spec = next(s for s in MT.generate("upstream-6.14")
                if s.function == "do_sve_acc" and s.text.startswith("_sve_alloc("))
    from kvmctx.model import host as H

    original = getattr(H, spec.function)
    try:   # run_one patches the host module in this process: put it back afterwards
        r = MT.run_one((spec, "upstream-6.14", "host-sig-sve", 400_000, "auto"))
    finally:
        setattr(H, spec.function, original)
    assert r.verdict == "killed" and r.invariant == "no-bug" and "TIF_SVE" in r.message
