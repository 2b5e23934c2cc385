"""signals and sig-frames: signal delivery and rt_sigreturn for every kind of task.

Feature ``signals`` (kinds 31, 32) alone is the old, small model: an
FPSIMD-only task at EL0 takes a signal in one atomic action (the live state
saved, the FPSIMD record written to the frame) and rt_sigreturn copies the
record back in one action (9de52a755cfb, ``HostConfig.sigreturn_copies_fpsimd``).
SVE and SME tasks take no signals there. ``standard`` and ``host-signals`` use it.

Feature ``sig-frames`` (with ``signals``) is arch/arm64/kernel/signal.c as v6.16+
runs it after Mark Rutland's 2025 rework (series "arm64: Preparatory
FPSIMD/SVE/SME fixes", 2025-04-09, and the 2026-01 fixes), for FPSIMD, SVE,
streaming-SVE and SME tasks:

* Delivery (kind 31) to any host thread, VMM threads included: at EL0 (an
  interrupt's return) or at a syscall's or KVM_RUN's return (do_notify_resume()
  runs do_signal() before it reloads the FP state):
  ``fpsimd_save_and_flush_current_state()`` under the FP context (929fa99b1215;
  before it the state was saved but stayed live and bound). Then, at a point
  where softirqs and preemption may land (the frame copy is uaccess and may fault
  and sleep), ``setup_sigframe()`` writes the records from the saved state: the
  FPSIMD record (the low 128 bits of the saved state), the SVE record with a
  payload when fp_type is SVE (61da7c8e2a60; before it, when TIF_SVE was set, or in
  streaming mode) and SVE_SIG_FLAG_SM in streaming mode, the ZA record (the model
  folds ZT0 into ZA) when SVCR.ZA is set, the FPMR record (thread.uw.fpmr; before
  929fa99b1215 the live FPMR register, wherever the task now ran). Then
  ``setup_return()``: SMSTOP applied to the saved state (99560c9452bb: streaming
  mode left - FPSIMD image zeroed, fp_type FPSIMD, FPMR zeroed - and ZA off;
  before it, the saved SVCR was cleared and ``sme_smstop()`` hit the live
  registers, which after a preemption in the copy may be another task's). The
  task then returns to EL0 (reloading) and its handler runs.
* The frame is user memory: its records are a read of the task's state, so the
  copy checks them against the task's latest values (integrity/confidentiality).
* In the handler: kinds 60-63 write the frame (budget ``signal``): a new FPSIMD
  record; an SVE record with new values; the same with SVE_SIG_FLAG_SM (a forged
  or foreign frame, as CRIU writes); a ZA record with new values. The SM and ZA
  forms exist only with ``sme`` (system_supports_sme()).
* rt_sigreturn (kind 32): the syscall entry (fp_user_discard), forget_syscall(),
  save+flush (929fa99b1215); then, at a preemptible point (the records are read
  with uaccess), the restore: an SVE payload sets SVCR.SM from its flag with
  TIF_SME and storage (d2907cbe9ea0; before it SM was set without TIF_SME and not
  cleared without the flag), TIF_SVE otherwise, fp_type SVE, the payload, then the
  FPSIMD record merged into its low bits when fp_type is SVE (c94f2f326146; before
  it, when TIF_SVE was set); no payload: the FPSIMD record, TIF_SVE and SVCR.SM
  clear. A ZA record sets TIF_SME and SVCR.ZA after allocating the SVE storage
  streaming mode needs (ea8ccfddbce0; before it only the ZA storage); none clears
  SVCR.ZA. FPMR goes to thread.uw.fpmr. The state reloads at the return to EL0;
  the frame's values are the task's latest from here.
* Storage: with ``sme``, whether thread.sve_state exists is task state
  (``thread.sve_state_allocated``: sve_alloc in the SVE/SME access traps and in
  sigreturn). Streaming mode live at EL0 without it is ea8ccfddbce0's crash (the
  next save writes through NULL): a no-bug invariant.

One frame level: the checker's canonical form keeps one second reference per
tag bank per thread (kvmctx.engines.canon), the frame; a nested frame's records
would need a second one, a change to the native engine.
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.features import ActionSpec, Feature, register
from kvmctx.model.flow import CHK_USER, K_USER
from kvmctx.model.layout import TAG_HI, TAG_LO, TAG_ZA, THREAD
from kvmctx.model.policy import Step
from kvmctx.model.values import FP_STATE_FPSIMD, FP_STATE_SVE, OWNER_MASK, ZERO, tag

SIGNAL = 31
SIGRETURN = 32
SIG_EDIT_FPSIMD = 60
SIG_EDIT_SVE = 61
SIG_FORGE_SM = 62
SIG_FORGE_ZA = 63

TAG_FPMR = "tag_fpmr"   # (kvmctx.model.feat.fpmr's bank)

# sig_fl bits: which records of the frame carry a payload.
FL_SVE = 1   # an SVE record with register data (vq != 0)
FL_SM = 2    # ... with SVE_SIG_FLAG_SM
FL_ZA = 4    # a ZA record with data (ZT0 folded in)

SIGNAL_C = "arch/arm64/kernel/signal.c"
_SF = ("sig-frames",)


# ------------------------------------------------------------------ FPSIMD-only


def _sig_enabled(m, s, k, t, pc, kind, out) -> None:
    if not t:
        return
    if m.sig_frames:
        # Every host thread, VMM threads included (KVM_RUN returns -EINTR to them and
        # the signal is delivered on the way out, after vcpu_put).
        if kind == K_USER:
            if s[m.sig_on[t]]:
                out.append((SIGRETURN, k, 0))
                out.append((SIG_EDIT_FPSIMD, k, 0))
                out.append((SIG_EDIT_SVE, k, 0))
                if m.has_sme:
                    out.append((SIG_FORGE_SM, k, 0))
                    out.append((SIG_FORGE_ZA, k, 0))
            else:
                out.append((SIGNAL, k, 0))
        elif (pc == m.L_SYS or pc == m.L_RET) and not s[m.sig_on[t]]:
            out.append((SIGNAL, k, 0))   # do_signal() on the syscall's way out
        return
    if m.vcpu_of[t] >= 0:
        return
    # FPSIMD-only frames: SVE and SME tasks take no signals in the small model.
    if kind == K_USER and not m.task_sve[t] and not m.task_sme[t]:
        out.append((SIGRETURN if s[m.sig_on[t]] else SIGNAL, k, 0))


def _signal(m, s, a) -> None:
    if m.sig_frames:
        _deliver(m, s, a)
        return
    k = a[1]
    t = s[m.cur[k]]
    H.fpsimd_save_user_state(m, s, k)   # fpsimd_signal_preserve_current_state()
    img = m.mem_zlo if s[m.fp_type[t]] == FP_STATE_SVE else m.mem_lo
    s[m.sig_lo[t]] = s[img[t]]          # preserve_fpsimd_context(): the frame record
    s[m.sig_on[t]] = 1
    m.ctr[C.SIGNALS] += 1


def _sigreturn(m, s, a) -> None:
    if m.sig_frames:
        _sigreturn_entry(m, s, a)
        return
    k = a[1]
    t = s[m.cur[k]]
    H.syscall_enter(m, s, k, t)
    s[m.pc[t]] = m.L_SYS
    if m.ret_window:
        s[m.insys[t]] = 0               # restore_sigframe(): forget_syscall()
    frame = s[m.sig_lo[t]]
    # restore_fpsimd_context() -> fpsimd_update_current_state(), then the
    # task's binding is invalidated so the return to EL0 reloads the image.
    if m.hc.sigreturn_copies_fpsimd or s[m.tif_sve[t]]:
        s[m.mem_lo[t]] = frame
        s[m.fp_type[t]] = FP_STATE_FPSIMD
    H.fpsimd_flush_task_state(m, s, t)
    s[m.foreign[t]] = 1
    s[m.want_lo[t]] = frame             # the program resumes with the frame's values
    s[m.want_hi[t]] = ZERO
    s[m.permit[t]] = 0
    s[m.sig_on[t]] = 0
    s[m.sig_lo[t]] = ZERO               # dead until the next delivery


# ------------------------------------------------------------------ sig-frames


def frame_bytes(m, t: int, fl: int) -> int:
    """Bytes of the frame's FP records (arm64 uapi sigcontext.h): fpsimd_context
    528 B; sve_context 16 B + SVE_SIG_REGS_SIZE (32 Z + 16 P + FFR at the VL, the
    streaming VL with SVE_SIG_FLAG_SM) when it has a payload; with SME za_context
    16 B + (SVL/8)^2 and zt_context 16 B + 64 B (the model's ZA bank holds ZT0);
    with FPMR fpmr_context 16 B."""
    n = 528 + 16
    if fl & FL_SVE:
        n += m.ssve_bytes[t] if fl & FL_SM else m.sve_bytes[t]
    if m.has_sme:
        n += 32 + (m.za_bytes[t] if fl & FL_ZA else 0)
    if m.has_fpmr:
        n += 16
    return n


def _save_flush_current(m, s, k: int, t: int) -> None:
    """fpsimd_save_and_flush_current_state() (d3a181588df9): save, then forget the
    task's binding so nothing reuses the registers."""
    H.fpsimd_save_user_state(m, s, k)
    H.fpsimd_flush_task_state(m, s, t)
    s[m.foreign[t]] = 1


def _deliver(m, s, a) -> None:
    """do_signal() -> setup_rt_frame(): the part under the FP context."""
    k = a[1]
    t = s[m.cur[k]]
    if m.hc.signal_save_flush_early:
        _save_flush_current(m, s, k, t)      # 929fa99b1215
    else:
        H.fpsimd_save_user_state(m, s, k)    # fpsimd_signal_preserve_current_state()
    s[m.pc[t]] = m.L_SIG_DELIVER
    m.ctr[C.SIGNALS] += 1


def _frame_read(m, s, k: int, t: int, what: str, got: int, want: int, permit: bool) -> None:
    """The handler can read its frame: a record must hold the task's latest value."""
    if got == want or (permit and got == ZERO):
        return
    owner = got & OWNER_MASK
    if owner not in (t, 0) and got != ZERO:
        m.violate("confidentiality", f"the signal frame of {m.tname(t)} holds {what} = "
                  f"{m.tagname(got)}, a value of {m.name(owner)} (its own latest is "
                  f"{m.tagname(want)})", k, (t, owner))
    else:
        m.violate("integrity", f"the signal frame of {m.tname(t)} holds {what} = "
                  f"{m.tagname(got)}, not its latest value {m.tagname(want)}", k, (t,))


def st_sig_frame(m, s, k, t):
    """setup_sigframe() (the records, from the saved state) and setup_return()."""
    hc = m.hc
    sve_img = s[m.fp_type[t]] == FP_STATE_SVE
    sm = m.has_sme and s[m.svcr_sm[t]]
    if hc.signal_frame_from_fp_type:
        payload = sve_img
        lo = s[m.mem_zlo[t]] if sve_img else s[m.mem_lo[t]]
    else:
        # Before 61da7c8e2a60: TIF_SVE (or streaming mode) decides, and the FPSIMD
        # record is synced from sve_state only when TIF_SVE is set (sve_to_fpsimd).
        payload = bool(s[m.tif_sve[t]] or sm)
        lo = s[m.mem_zlo[t]] if s[m.tif_sve[t]] else s[m.mem_lo[t]]
    fl = 0
    s[m.sig_lo[t]] = lo
    if payload:
        fl = FL_SVE | (FL_SM if sm else 0)
        s[m.sig_zlo[t]] = s[m.mem_zlo[t]]
        s[m.sig_hi[t]] = s[m.mem_hi[t]]
    else:
        s[m.sig_zlo[t]] = ZERO
        s[m.sig_hi[t]] = ZERO
    permit = bool(s[m.permit[t]])
    _frame_read(m, s, k, t, "V0-V31 (FPSIMD record)", lo, s[m.want_lo[t]], False)
    _frame_read(m, s, k, t, "Z upper bits/P/FFR (SVE record)", s[m.sig_hi[t]],
                s[m.want_hi[t]], permit)
    if m.has_sme:
        if s[m.svcr_za[t]]:
            fl |= FL_ZA
            s[m.sig_za[t]] = s[m.mem_za[t]]
        else:
            s[m.sig_za[t]] = ZERO
        if bool(fl & FL_SM) != bool(s[m.want_sm[t]]):
            m.violate("integrity", f"the signal frame of {m.tname(t)} says "
                      f"SVE_SIG_FLAG_SM={int(bool(fl & FL_SM))}, but its SVCR.SM is "
                      f"{s[m.want_sm[t]]}", k, (t,))
        if s[m.want_zaon[t]]:
            _frame_read(m, s, k, t, "ZA (ZA record)", s[m.sig_za[t]], s[m.want_za[t]], False)
    if m.has_fpmr:
        if hc.signal_save_flush_early:
            x = s[m.mem_fpmr[t]]
        else:
            # preserve_fpmr_context() before 929fa99b1215: the live register, read
            # without the FP context (after a preemption: another task's).
            x = s[m.fpmr[k]]
            s[m.mem_fpmr[t]] = x
        s[m.sig_fpmr[t]] = x
        _frame_read(m, s, k, t, "FPMR (FPMR record)", x, s[m.want_fpmr[t]], False)
    s[m.sig_fl[t]] = fl
    s[m.sig_on[t]] = 1
    m.ctr[C.SIGFRAME_BYTES] += frame_bytes(m, t, fl)
    # setup_return(): the handler starts with SM and ZA off.
    if m.has_sme:
        if hc.signal_smstop_saved_state:
            if not hc.signal_save_flush_early:
                _save_flush_current(m, s, k, t)   # 99560c9452bb saves+flushes itself
            _task_smstop(m, s, t, True)
        else:
            _task_smstop(m, s, t, False)
            H.sme_smstop(m, s, k)   # the live registers: whoever's they are now
    return m.L_SYS


def _task_smstop(m, s, t: int, fpmr: bool) -> None:
    """task_smstop_sm() and SVCR.ZA cleared, on the saved state; the handler's view."""
    if s[m.svcr_sm[t]]:
        s[m.mem_lo[t]] = ZERO
        s[m.fp_type[t]] = FP_STATE_FPSIMD
        s[m.svcr_sm[t]] = 0
        s[m.want_lo[t]] = ZERO
        s[m.want_hi[t]] = ZERO
        s[m.permit[t]] = 0
        if m.has_fpmr and fpmr:
            s[m.mem_fpmr[t]] = ZERO
            s[m.want_fpmr[t]] = ZERO
    s[m.svcr_za[t]] = 0
    s[m.want_sm[t]] = 0
    s[m.want_zaon[t]] = 0
    s[m.want_za[t]] = ZERO


def _sigreturn_entry(m, s, a) -> None:
    """rt_sigreturn(): el0_svc, forget_syscall(), save+flush; the records are read at
    the next (preemptible) point."""
    k = a[1]
    t = s[m.cur[k]]
    H.syscall_enter(m, s, k, t)
    if m.ret_window:
        s[m.insys[t]] = 0               # forget_syscall()
    _save_flush_current(m, s, k, t)
    s[m.pc[t]] = m.L_SIG_RESTORE


def st_sig_restore(m, s, k, t):
    """restore_sigframe(): the records into the task's saved state."""
    hc = m.hc
    fl = s[m.sig_fl[t]]
    rec = s[m.sig_lo[t]]
    m.ctr[C.SIGFRAME_BYTES] += frame_bytes(m, t, fl)
    sm = bool(fl & FL_SM)
    if fl & FL_SVE:
        if m.has_sme:
            if sm:
                s[m.svcr_sm[t]] = 1
                if hc.sigreturn_sm_sets_tif_sme:
                    s[m.tif_sme[t]] = 1          # d2907cbe9ea0 (sme_alloc, TIF_SME)
            else:
                if hc.sigreturn_sm_sets_tif_sme:
                    s[m.svcr_sm[t]] = 0
            H._sve_alloc(m, s, t)
        if not sm:
            s[m.tif_sve[t]] = 1
        s[m.fp_type[t]] = FP_STATE_SVE
        s[m.mem_zlo[t]] = s[m.sig_zlo[t]]
        s[m.mem_hi[t]] = s[m.sig_hi[t]]
        # fpsimd_update_current_state(): the FPSIMD record overrides the low bits.
        s[m.mem_lo[t]] = rec
        if (s[m.fp_type[t]] == FP_STATE_SVE) if hc.sigreturn_merge_by_fp_type \
                else s[m.tif_sve[t]]:
            s[m.mem_zlo[t]] = rec
        s[m.want_hi[t]] = s[m.sig_hi[t]]
    else:
        # restore_fpsimd_context(): TIF_SVE and SVCR.SM clear (1bf663a86a45).
        s[m.tif_sve[t]] = 0
        if m.has_sme:
            s[m.svcr_sm[t]] = 0
        s[m.fp_type[t]] = FP_STATE_FPSIMD
        s[m.mem_lo[t]] = rec
        s[m.want_hi[t]] = ZERO
    s[m.want_lo[t]] = rec
    s[m.permit[t]] = 0
    if m.has_sme:
        if fl & FL_ZA:
            if hc.sigreturn_za_allocates_sve:
                H._sve_alloc(m, s, t)            # ea8ccfddbce0
            s[m.tif_sme[t]] = 1
            s[m.svcr_za[t]] = 1
            s[m.mem_za[t]] = s[m.sig_za[t]]
            s[m.want_za[t]] = s[m.sig_za[t]]
        else:
            s[m.svcr_za[t]] = 0
            s[m.want_za[t]] = ZERO
        s[m.want_sm[t]] = int(sm)   # the frame decides whether the task resumes streaming
        s[m.want_zaon[t]] = 1 if fl & FL_ZA else 0
    if m.has_fpmr:
        x = s[m.sig_fpmr[t]]
        s[m.mem_fpmr[t]] = x                     # thread.uw.fpmr
        s[m.want_fpmr[t]] = x
        s[m.sig_fpmr[t]] = ZERO
    H.fpsimd_flush_task_state(m, s, t)
    s[m.foreign[t]] = 1
    # The frame is dead until the next delivery.
    s[m.sig_on[t]] = 0
    s[m.sig_lo[t]] = ZERO
    s[m.sig_zlo[t]] = ZERO
    s[m.sig_hi[t]] = ZERO
    s[m.sig_fl[t]] = 0
    if m.has_sme:
        s[m.sig_za[t]] = ZERO
    return m.L_SYS


def _new_value(m, s, t: int) -> int:
    v = s[m.ver[t]] + 1
    s[m.ver[t]] = v
    return tag(t, v)


def _edit_fpsimd(m, s, a) -> None:
    t = s[m.cur[a[1]]]
    s[m.sig_lo[t]] = _new_value(m, s, t)


def _edit_sve(m, s, a, sm: int) -> None:
    t = s[m.cur[a[1]]]
    x = _new_value(m, s, t)
    s[m.sig_zlo[t]] = x
    s[m.sig_hi[t]] = x
    s[m.sig_fl[t]] = (s[m.sig_fl[t]] & FL_ZA) | FL_SVE | sm


def _forge_za(m, s, a) -> None:
    t = s[m.cur[a[1]]]
    s[m.sig_za[t]] = _new_value(m, s, t)
    s[m.sig_fl[t]] = s[m.sig_fl[t]] | FL_ZA


def _check_cpu(m, s, k) -> None:
    """ea8ccfddbce0's crash: streaming mode live at EL0 with no thread.sve_state; and
    the same for TIF_SVE (do_sve_acc, sve_set_common and sigreturn allocate first)."""
    if not (m.sig_frames and m.has_sme):
        return
    t = s[m.cur[k]]
    if (t and (s[m.sm[k]] or s[m.tif_sve[t]]) and not s[m.sve_store[t]]
            and m.p_check[s[m.pc[t]]] == CHK_USER):
        mode = "in streaming mode" if s[m.sm[k]] else "with TIF_SVE set"
        m.violate("no-bug", f"{m.tname(t)} runs {mode} on CPU{k} with no "
                  "thread.sve_state: the next fpsimd_save_user_state() writes the SVE "
                  "registers through a NULL pointer", k, (t,))


def _init(m, s) -> None:
    m.sig_frames = m.config.has("sig-frames")
    if m.sig_frames:
        m.L_SIG_DELIVER = m.prog.labels["SIG_DELIVER"]
        m.L_SIG_RESTORE = m.prog.labels["SIG_RESTORE"]


def _steps(m) -> dict:
    if not m.config.has("sig-frames"):
        return {}
    return {
        "rest:SIG_DELIVER": (Step(st_sig_frame, "signal delivery: setup_sigframe() copies the "
                                  "records to the user frame (may fault and sleep), then "
                                  "setup_return()", f"{SIGNAL_C}: setup_rt_frame"),),
        "rest:SIG_RESTORE": (Step(st_sig_restore, "rt_sigreturn: restore_sigframe() reads the "
                                  "records from the user frame (may fault and sleep)",
                                  f"{SIGNAL_C}: restore_sigframe"),),
    }


def _who(m, s, a) -> str:
    return m.tname(s[m.cur[a[1]]])


register(Feature(
    name="signals",
    fields=(("sig_lo", "thread.sigframe.fpsimd", THREAD, ZERO, TAG_LO),
            ("sig_on", "thread.in_signal_handler", THREAD, 0, None),
            # sig-frames: the other records of the one frame.
            ("sig_zlo", "thread.sigframe.sve.low", THREAD, ZERO, TAG_LO, _SF),
            ("sig_hi", "thread.sigframe.sve.upper", THREAD, ZERO, TAG_HI, _SF),
            ("sig_fl", "thread.sigframe.flags", THREAD, 0, None, _SF),
            ("sig_za", "thread.sigframe.za", THREAD, ZERO, TAG_ZA, _SF + ("sme",)),
            ("sig_fpmr", "thread.sigframe.fpmr", THREAD, ZERO, TAG_FPMR, _SF + ("fpmr",)),
            ("sve_store", "thread.sve_state_allocated", THREAD, 0, None, _SF + ("sme",))),
    actions={
        SIGNAL: ActionSpec("signal", _signal, lambda m, s, a:
                           f"{_who(m, s, a)}: signal delivered: state saved"
                           + (" and flushed" if m.sig_frames else ", FPSIMD record written "
                              "to the frame, handler runs"), budget="signal"),
        SIGRETURN: ActionSpec("sigreturn", _sigreturn, lambda m, s, a:
                              f"{_who(m, s, a)}: rt_sigreturn()"
                              + (": state saved and flushed" if m.sig_frames else
                                 ": frame record restored"), budget="signal"),
        SIG_EDIT_FPSIMD: ActionSpec("sig-edit-fpsimd", _edit_fpsimd, lambda m, s, a:
                                    f"{_who(m, s, a)} (handler): writes a new FPSIMD record "
                                    "into its frame", budget="signal"),
        SIG_EDIT_SVE: ActionSpec("sig-edit-sve", lambda m, s, a: _edit_sve(m, s, a, 0),
                                 lambda m, s, a: f"{_who(m, s, a)} (handler): writes an SVE "
                                 "record with new values into its frame", budget="signal"),
        SIG_FORGE_SM: ActionSpec("sig-forge-sm", lambda m, s, a: _edit_sve(m, s, a, FL_SM),
                                 lambda m, s, a: f"{_who(m, s, a)} (handler): writes an SVE "
                                 "record with SVE_SIG_FLAG_SM and new values into its frame",
                                 budget="signal"),
        SIG_FORGE_ZA: ActionSpec("sig-forge-za", _forge_za, lambda m, s, a:
                                 f"{_who(m, s, a)} (handler): writes a ZA record with new "
                                 "values into its frame", budget="signal"),
    },
    enabled=_sig_enabled,
    check_cpu=_check_cpu,
    init=_init,
    steps=_steps,
    extra_wants=((TAG_LO, "sig_lo"), (TAG_HI, "sig_hi"), (TAG_ZA, "sig_za"),
                 (TAG_FPMR, "sig_fpmr")),
))
