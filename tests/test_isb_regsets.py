"""Trap-control writes pending an ISB (feature isb) and the SME regsets (feature
sme-regsets): issue 15 items 7 and 5."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kvmctx import policies as P
from kvmctx.catalogue import mutants as MU
from kvmctx.engines import checker as CK
from kvmctx.engines import engine as EN
from kvmctx.engines import story as ST
from kvmctx.model.feat import isb as ISB
from kvmctx.model.feat import regsets as RS
from kvmctx.model.feat.host_life import PTRACE_SVE
from kvmctx.model.machine import SCHED, SIRQ, STEP, Model

MU.load_all()
NEW = {"smen-put-no-isb": "no ISB since", "smen-exit-trapped": "sme_smstop",
       "ssve-write-keeps-tif-sme-clear": "live VL", "zt-write-keeps-tif-sme-clear": "ZA"}


def run(pol, b: CK.Bounds):
    b, _ = CK.adapt_bounds(b, pol.supports)
    m = Model(b.config(), pol)
    return EN.check(m, b), m, b


@pytest.mark.parametrize("name", sorted(NEW))
def test_new_mutant_is_found_with_its_invariant_and_replays(name):
    mu = MU.get(name)
    res, m, b = run(mu.build(), CK.BOUNDS[mu.bounds])
    assert res.violation is not None and res.violation["invariant"] == mu.invariant, name
    assert NEW[name] in res.violation["message"]
    recs, _ = ST.replay(m, res.path, b.features)
    assert recs[-1].violations


@pytest.mark.parametrize("bounds", ["kvm-sme-isb", "kvm-sme-isb-softirq", "host-ptrace-sme"])
@pytest.mark.parametrize("policy", ["upstream-6.14", "pkvm"])
def test_fixed_designs_are_clean(policy, bounds):
    res, _, _ = run(P.get(policy), CK.BOUNDS[bounds])
    assert res.violation is None and res.complete


def test_isb_adds_no_states_to_upstream():
    """v6.14 synchronises every host SMEN write in the step that makes it: the feature's
    two fields are a function of the rest of the state."""
    b = CK.BOUNDS["kvm-sme-isb-softirq"]
    with_isb, _, _ = run(P.get("upstream-6.14"), b)
    without, _, _ = run(P.get("upstream-6.14"), replace(b, features=b.features - {"isb"}))
    assert with_isb.states == without.states


def test_the_isb_in_the_put_is_what_separates_21_from_the_fixed_put():
    """The put's SMEN write with 59d78a2ec0e9's ISB and 375110ab51de's exit is clean."""
    fixed = ISB.with_put_restore_smen(P.get("upstream-6.14"))
    res, _, _ = run(fixed, CK.BOUNDS["kvm-sme-isb-softirq"])
    assert res.violation is None and res.complete
    syncs_only = MU.get("smen-exit-trapped").build()
    res, _, _ = run(syncs_only, CK.BOUNDS["kvm-sme-isb"])   # no softirq: no window left
    assert res.violation is None and res.complete


def _model(bounds: str, policy: str = "upstream-6.14") -> tuple[Model, list[int]]:
    b = CK.BOUNDS[bounds]
    m = Model(b.config(), P.get(policy))
    return m, m.new_state()


def test_synchronisation_points():
    m, s = _model("kvm-sme-isb-softirq")
    t = 1
    s[m.cur[0]] = t
    s[m.hsmen[0]], s[m.hsmen_eff[0]] = 1, 0                     # a write pending
    s[m.pc[t]] = m.L_SYS
    ISB.sync_before(m, s, (STEP, 0, 0))
    ISB.sync_before(m, s, (SCHED, 0, 0))                        # preempt_enable(): no event
    assert s[m.hsmen_eff[0]] == 0
    ISB.sync_before(m, s, (SIRQ, 0, 0))                         # the IRQ is an exception
    assert s[m.hsmen_eff[0]] == 1
    s[m.hsmen_eff[0]] = 0
    s[m.pc[t]] = m.L_USER
    ISB.sync_before(m, s, (SCHED, 0, 0))                        # preempted at EL0: an IRQ
    assert s[m.hsmen_eff[0]] == 1


def test_host_sme_access_under_a_pending_write_is_reported():
    m, s = _model("kvm-sme-isb")
    s[m.hsmen[0]], s[m.hsmen_eff[0]] = 1, 0
    ISB.host_sme_access(m, s, 0, "read SVCR")
    assert m.vio and m.vio[-1].invariant == "no-bug" and "no ISB" in m.vio[-1].message
    m.vio.clear()
    ISB.isb(m, s, 0)
    ISB.host_sme_access(m, s, 0, "read SVCR")
    assert not m.vio


def _stopped_sme_task(bounds="host-ptrace-sme"):
    m, s = _model(bounds)
    u = next(t for t in range(1, m.nthreads) if m.task_sme[t])
    return m, s, u


def test_sme_tasks_are_stopped_only_with_the_feature():
    m, s, u = _stopped_sme_task()
    acts = m.enabled(s, m.config.features)
    assert (RS.PTRACE_ZT, u, 0) in acts and (RS.PTRACE_ZA_OFF, u, 0) not in acts
    b = CK.BOUNDS["host-ptrace-sme"]
    quiet = Model(replace(b, features=b.features - {"sme-regsets"}).config(),
                  P.get("upstream-6.14"))
    acts = quiet.enabled(quiet.new_state(), quiet.config.features)
    assert not [a for a in acts if a[1] == u and a[0] >= 33 and a[0] != 35]


def test_regset_writes_set_the_task_state():
    m, s, u = _stopped_sme_task()
    m.apply(s, (RS.PTRACE_ZT, u, 0))
    assert s[m.svcr_za[u]] == 1 and s[m.tif_sme[u]] == 1 and s[m.mem_za[u]] == s[m.want_za[u]]
    assert (RS.PTRACE_ZA_OFF, u, 0) in m.enabled(s, m.config.features)
    m.apply(s, (RS.PTRACE_ZA_OFF, u, 0))
    assert s[m.svcr_za[u]] == 0 and s[m.want_zaon[u]] == 0
    m.apply(s, (RS.PTRACE_SSVE, u, 0))
    assert s[m.svcr_sm[u]] == 1 and s[m.tif_sme[u]] == 1
    assert (RS.PTRACE_SVE_FPSIMD, u, 0) in m.enabled(s, m.config.features)
    m.apply(s, (PTRACE_SVE, u, 0))                              # NT_ARM_SVE: mode switch
    assert s[m.svcr_sm[u]] == 0 and s[m.want_sm[u]] == 0 and s[m.tif_sve[u]] == 1
    assert (RS.PTRACE_SVE_FPSIMD, u, 0) not in m.enabled(s, m.config.features)
    m.apply(s, (RS.PTRACE_SSVE, u, 0))
    m.apply(s, (RS.PTRACE_SVE_FPSIMD, u, 0))                    # ... in FPSIMD format
    assert s[m.svcr_sm[u]] == 0 and s[m.tif_sve[u]] == 0 and s[m.want_hi[u]] == 0
    assert s[m.foreign[u]] == 1
