"""sme: host tasks that use SME streaming mode and ZA (arm64, v5.19 on).

What the feature adds, following arch/arm64/kernel/fpsimd.c of v6.14 and
Documentation/arch/arm64/sme.rst:

* State. Per CPU: PSTATE.SM (core field ``cpu.svcr.sm``) and PSTATE.ZA,
  the ZA/ZT0 bank (its own tag bank), CPACR_EL1.SMEN for EL0 and the live
  streaming VL (SMCR_EL1.LEN). Per task: TIF_SME, ``thread.svcr`` (the saved
  SM and ZA bits), the saved ZA image, and ghosts for the latest ZA value
  and the SVCR the task expects to see.
* Events. ``user-sme`` (kind 35): the task executes SMSTART (trapping first
  through do_sme_acc if EL0 SME is disabled) and writes streaming Z/P and
  ZA; in streaming mode its Z/P registers have the streaming VL and SVE
  instructions are governed by SMEN, not ZEN. ``user-smstop`` (kind 36):
  SMSTOP, which zeroes Z/P/FFR when SM goes 1 -> 0 and discards ZA.
* Kernel paths (in ``kvmctx.model.host``, because fpsimd.c does them):
  saves record SVCR and ZA and take the SVE form at the streaming VL in
  streaming mode; loads restore the streaming VL, SVCR, ZA, then the
  registers; ``fpsimd_flush_cpu_state`` issues SMSTOP; a syscall leaves
  streaming mode (fp_user_discard: sme_smstop_sm), keeping ZA;
  fpsimd_bind_task_to_cpu programs SMEN from TIF_SME.
* KVM: every arm64 design that supports SME here (upstream-6.14, pkvm and
  the eager predictors on the v6.14 flow) saves and flushes the host state
  at vcpu_load, which leaves PSTATE.{SM,ZA} = {0,0}; guests have no SME.

Invariants the feature adds: a task at EL0 sees the SM/ZA bits it expects
and, with ZA on, its own latest ZA; a guest never runs with PSTATE.SM or
PSTATE.ZA set (v6.14's WARN_ON_ONCE after the flush in
kvm_arch_vcpu_load_fp); at rest every task's SVCR and ZA are in memory or
live on the one CPU bound to it.

Not modelled: signal frames with streaming/ZA records (catalogue 8, 9, 11,
12); SME tasks take no signals in the model. Elsewhere: FPMR (feature fpmr),
ptrace of SME state (feature sme-regsets), the SMEN write pending an ISB
(feature isb, catalogue 21).
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.features import ActionSpec, Feature, register
from kvmctx.model.flow import CHK_GUEST, CHK_KNEON, CHK_USER, K_USER
from kvmctx.model.layout import CPU, CTX, TAG_ZA, THREAD
from kvmctx.model.values import ZERO

USER_SME = 35
USER_SMSTOP = 36


def _enabled(m, s, k, t, pc, kind, out) -> None:
    if kind == K_USER and m.task_sme[t]:
        out.append((USER_SME, k, 0))
        if s[m.sm[k]] or s[m.za_on[k]]:
            out.append((USER_SMSTOP, k, 0))


def _user_sme(m, s, a) -> None:
    k = a[1]
    t = s[m.cur[k]]
    if not s[m.smen[k]] and m.trap_window:
        s[m.pc[t]] = m.L_SME_TRAP   # el0_sme_acc, a preemptible path (flow.py)
        return
    m.ctr[C.HOST_FP_USES] += 1
    if not s[m.smen[k]]:
        H.do_sme_acc(m, s, k, t)
        # The trap returns through ret_to_user (reload if the state was in
        # memory) and the SMSTART is retried.
        H.fpsimd_restore_current_state(m, s, k, t)
    if not s[m.sm[k]]:
        s[m.sm[k]] = 1           # SM 0 -> 1 zeroes Z/P/FFR (overwritten below)
        if m.has_fpmr:
            s[m.fpmr[k]] = s[m.want_fpmr[t]] = ZERO   # ... and FPMR
    if not s[m.za_on[k]]:
        s[m.za_on[k]] = 1        # ZA 0 -> 1 zeroes ZA (overwritten below)
    # The task writes streaming Z/P and ZA: one new version of its state.
    m.write(s, k, t, True)
    x = s[m.want_lo[t]]
    s[m.za[k]] = x
    s[m.want_za[t]] = x
    s[m.want_sm[t]] = 1
    s[m.want_zaon[t]] = 1


def _user_smstop(m, s, a) -> None:
    k = a[1]
    t = s[m.cur[k]]
    if s[m.sm[k]]:
        s[m.want_lo[t]] = ZERO
        s[m.want_hi[t]] = ZERO
        s[m.permit[t]] = 0
        if m.has_fpmr:
            s[m.want_fpmr[t]] = ZERO   # SM 1 -> 0 zeroes FPMR too
    H.sme_smstop(m, s, k)
    s[m.want_za[t]] = ZERO
    s[m.want_sm[t]] = 0
    s[m.want_zaon[t]] = 0


def _check_cpu(m, s, k) -> None:
    t = s[m.cur[k]]
    if not t:
        return
    chk = m.p_check[s[m.pc[t]]]
    sm, za_on = s[m.sm[k]], s[m.za_on[k]]
    if chk == CHK_USER:
        if sm != s[m.want_sm[t]] or za_on != s[m.want_zaon[t]]:
            m.violate("integrity", f"{m.tname(t)} at EL0 on CPU{k} runs with PSTATE.SM={sm} "
                      f"ZA={za_on}, but its own SVCR is SM={s[m.want_sm[t]]} "
                      f"ZA={s[m.want_zaon[t]]}", k, (t,))
            s[m.want_sm[t]], s[m.want_zaon[t]] = sm, za_on
        elif za_on and s[m.za[k]] != s[m.want_za[t]]:
            m._bad_read(s, k, t, "ZA", s[m.za[k]], s[m.want_za[t]], m.want_za)
    elif chk == CHK_GUEST:
        if sm or za_on:
            v = m.vcpu_of[t]
            m.violate("no-bug", f"{m.name(m.vctx[v])} runs with the host's PSTATE.SM={sm} "
                      f"ZA={za_on} (WARN_ON_ONCE(read_sysreg_s(SYS_SVCR)) in "
                      "kvm_arch_vcpu_load_fp)", k, (m.vctx[v],))
    elif chk == CHK_KNEON and sm:
        m.violate("integrity", f"{m.tname(t)}'s kernel-mode NEON runs in streaming mode on "
                  f"CPU{k}", k, (m.kn_ctx[t],))


def _check_state(m, s) -> None:
    """Recoverability of each SME task's SVCR and ZA at rest."""
    exempt = m.exempt(s)
    for t in range(1, m.nthreads):
        if not m.task_sme[t] or t in exempt:
            continue
        want_sm, want_zaon, want_za = s[m.want_sm[t]], s[m.want_zaon[t]], s[m.want_za[t]]
        if (s[m.svcr_sm[t]] == want_sm and s[m.svcr_za[t]] == want_zaon
                and (not want_zaon or s[m.mem_za[t]] == want_za)):
            continue
        live = [k for k in range(m.ncpu) if s[m.bound[k]] == t and s[m.fcpu[t]] == k
                and s[m.sm[k]] == want_sm and s[m.za_on[k]] == want_zaon
                and (not want_zaon or s[m.za[k]] == want_za)]
        if len(live) == 1:
            continue
        m.violate("recoverability", f"the SME state of {m.tname(t)} (SVCR SM={want_sm} "
                  f"ZA={want_zaon}, ZA {m.tagname(want_za)}) is neither in memory nor live "
                  "on a CPU bound to it: it is lost", -1, (t,))
        return


def _init(m, s) -> None:
    for k in range(m.ncpu):
        s[m.svl[k]] = 1


register(Feature(
    name="sme",
    fields=(
        ("za", "cpu.regs.za", CPU, ZERO, TAG_ZA),
        ("za_on", "cpu.svcr.za", CPU, 0, None),
        ("smen", "cpu.cpacr.smen_el0", CPU, 0, None),
        ("svl", "cpu.smcr_vq", CPU, 1, None),
        ("mem_za", "ctx.za_state", CTX, ZERO, TAG_ZA),
        ("want_za", "ghost.latest.za", CTX, ZERO, TAG_ZA),
        ("tif_sme", "thread.TIF_SME", THREAD, 0, None),
        ("svcr_sm", "thread.svcr.sm", THREAD, 0, None),
        ("svcr_za", "thread.svcr.za", THREAD, 0, None),
        ("want_sm", "ghost.svcr.sm", THREAD, 0, None),
        ("want_zaon", "ghost.svcr.za", THREAD, 0, None),
    ),
    actions={
        USER_SME: ActionSpec("user-sme", _user_sme, lambda m, s, a:
                             f"{m.tname(s[m.cur[a[1]]])}: SMSTART; writes streaming Z/P and "
                             "ZA at EL0"),
        USER_SMSTOP: ActionSpec("user-smstop", _user_smstop, lambda m, s, a:
                                f"{m.tname(s[m.cur[a[1]]])}: SMSTOP at EL0 (Z/P zeroed, ZA "
                                "off)"),
    },
    enabled=_enabled,
    check_cpu=_check_cpu,
    check_state=_check_state,
    init=_init,
    banks=((TAG_ZA, "want_za"),),
))
