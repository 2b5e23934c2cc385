"""The host's lifecycle events: signals, ptrace, exec, CPU PM and hotplug.

None of them is KVM's, but every KVM design runs on a host that has them,
and they are where the host's own FP bugs were (bug-catalogue.md entries
1-3, 5, 10). Each is a feature of its own, so bounds choose which to explore:

* ``pm`` (kind 28): an idle CPU enters and leaves a power-down state; its
  registers come back as garbage. fpsimd_cpu_pm_notifier saves and unbinds
  the live state first (7c68a9cc0402; before it, the binding survived).
* ``hotplug`` (kind 29): an idle CPU goes offline (its runnable threads move
  to the first other CPU) and comes back with garbage registers.
  fpsimd_cpu_dead clears its binding (32365e64a20e; before it, it stayed).
* ``exec`` (kind 30): a host task at EL0 calls execve. fpsimd_flush_thread
  zeroes the saved image and TIF_SVE, sets TIF_FOREIGN_FPSTATE and
  invalidates the task's binding (674c242c9323; before it, a memset left
  fpsimd_cpu = 0, a real CPU). The new program's latest value is zero.
* ``signals`` (kinds 31, 32) lives in its own module,
  ``kvmctx.model.feat.signals`` (with ``sig-frames``: every task kind).
* ``ptrace`` (kinds 33, 34): a debugger writes a stopped task's FPSIMD
  (NT_PRFPREG) or SVE (NT_ARM_SVE) registers: a new latest value in its
  saved image, its binding invalidated. An NT_PRFPREG write zero-pads an SVE
  image (fpr_set -> sve_sync_from_fpsimd_zeropad): the task resumes with zero
  Z upper bits. (NT_ARM_FPMR is in the ``fpmr`` feature.) A stopped task is one not running,
  at EL0 or in a syscall; an SME task only with ``sme-regsets`` (feat/regsets.py),
  and NT_ARM_SVE then also leaves streaming mode. A written SVE state must be kept: the syscall's
  permission to discard the upper bits is gone (398edaa12f9c).
"""

from __future__ import annotations

from kvmctx.model import host as H
from kvmctx.model.features import ActionSpec, Feature, register
from kvmctx.model.flow import K_USER
from kvmctx.model.values import FP_STATE_FPSIMD, FP_STATE_SVE, GARBAGE, ZERO, tag

PM = 28
HOTPLUG = 29
EXEC = 30
PTRACE_FP = 33
PTRACE_SVE = 34
PTRACE_SVE_BY = 55   # the same NT_ARM_SVE write, issued by a modelled tracer task


def _garbage(m, s, k: int) -> None:
    s[m.lo[k]] = GARBAGE
    s[m.hi[k]] = GARBAGE
    if m.has_fpmr:
        s[m.fpmr[k]] = GARBAGE
    if m.has_sme:
        s[m.za[k]] = GARBAGE     # SVCR comes back with SM = ZA = 0
        s[m.sm[k]] = 0
        s[m.za_on[k]] = 0


def _unbind(m, s, k: int) -> None:
    s[m.bound[k]] = 0
    s[m.to_save[k]] = 0
    s[m.bound_vl[k]] = 1


def _host_task_at_el0(m, s, t: int, pc: int, kind: int) -> bool:
    return bool(t) and kind == K_USER and m.vcpu_of[t] < 0


# ------------------------------------------------------------------ PM


def _pm_enabled(m, s, k, t, pc, kind, out) -> None:
    if not t:
        out.append((PM, k, 0))


def _pm(m, s, a) -> None:
    k = a[1]
    if m.hc.pm_invalidates:
        H.fpsimd_save_and_flush_cpu_state(m, s, k)
    _garbage(m, s, k)


register(Feature(
    name="pm",
    actions={PM: ActionSpec("cpu-pm", _pm, lambda m, s, a:
                            f"CPU{a[1]}: cpu_pm_enter()/cpu_pm_exit(): power-down, registers "
                            "lost", budget="pm")},
    enabled=_pm_enabled,
))


# ------------------------------------------------------------------ hotplug


def _hp_enabled(m, s, k, t, pc, kind, out) -> None:
    if not t and m.ncpu > 1:
        out.append((HOTPLUG, k, 0))


def _hotplug(m, s, a) -> None:
    k = a[1]
    dest = 1 if k == 0 else 0
    for u in range(1, m.nthreads):
        if s[m.rq[u]] == k:
            s[m.rq[u]] = dest   # migrate_tasks() off the dying CPU
    if m.hc.hotplug_invalidates:
        _unbind(m, s, k)        # fpsimd_cpu_dead()
    _garbage(m, s, k)


register(Feature(
    name="hotplug",
    actions={HOTPLUG: ActionSpec("cpu-hotplug", _hotplug, lambda m, s, a:
                                 f"CPU{a[1]}: offline (tasks moved away), then online again: "
                                 "registers lost", budget="hotplug")},
    enabled=_hp_enabled,
))


# ------------------------------------------------------------------ exec


def _exec_enabled(m, s, k, t, pc, kind, out) -> None:
    if _host_task_at_el0(m, s, t, pc, kind):
        out.append((EXEC, k, 0))


def _exec(m, s, a) -> None:
    k = a[1]
    t = s[m.cur[k]]
    H.syscall_enter(m, s, k, t)
    s[m.pc[t]] = m.L_SYS
    # fpsimd_flush_thread(): a new program starts from zeroed FP state.
    if m.hc.exec_flushes_task:
        H.fpsimd_flush_task_state(m, s, t)
    else:
        s[m.fcpu[t]] = 0   # memset() of the whole state: "last loaded on CPU 0"
    s[m.foreign[t]] = 1
    s[m.mem_lo[t]] = ZERO
    s[m.mem_zlo[t]] = ZERO
    s[m.mem_hi[t]] = ZERO
    s[m.fp_type[t]] = FP_STATE_FPSIMD
    s[m.tif_sve[t]] = 0
    s[m.want_lo[t]] = ZERO
    s[m.want_hi[t]] = ZERO
    s[m.permit[t]] = 0
    if m.has_fpmr:
        # a90878f297d3: ... and thread.uw.fpmr; the new program's FPMR is zero.
        if m.hc.exec_resets_fpmr:
            s[m.mem_fpmr[t]] = ZERO
        s[m.want_fpmr[t]] = ZERO
    if m.has_sme:
        # ... and TIF_SME, thread.svcr and ZA (the new program starts with SME off).
        s[m.tif_sme[t]] = 0
        s[m.svcr_sm[t]] = s[m.svcr_za[t]] = 0
        s[m.mem_za[t]] = s[m.want_za[t]] = ZERO
        s[m.want_sm[t]] = s[m.want_zaon[t]] = 0


register(Feature(
    name="exec",
    actions={EXEC: ActionSpec("execve", _exec, lambda m, s, a:
                              f"{m.tname(s[m.cur[a[1]]])}: execve(): fpsimd_flush_thread()",
                              budget="exec")},
    enabled=_exec_enabled,
))


# ------------------------------------------------------------------ ptrace


def _stopped(m, s, u: int, running: set[int]) -> bool:
    if u in running or m.vcpu_of[u] >= 0 or (m.task_sme[u] and not m.sme_regsets):
        return False  # (SME tasks are stopped only with feature sme-regsets)
    pc = s[m.pc[u]]
    return m.p_kind[pc] == K_USER or pc == m.L_SYS


def _ptrace_enabled(m, s, running, out) -> None:
    for u in range(1, m.nthreads):
        if _stopped(m, s, u, running):
            out.append((PTRACE_FP, u, 0))
            if m.task_sve[u] and m.has_sve:
                out.append((PTRACE_SVE, u, 0))


def _tracer_enabled(m, s, k, t, pc, kind, out) -> None:
    """A running host task inside a syscall (ptrace(PTRACE_SETREGSET)) as the tracer."""
    if not t or pc != m.L_SYS or m.vcpu_of[t] >= 0 or not m.has_sve:
        return
    running = {s[m.cur[j]] for j in range(m.ncpu)}
    for u in range(1, m.nthreads):
        if u != t and m.task_sve[u] and _stopped(m, s, u, running):
            out.append((PTRACE_SVE_BY, k, u))


def _ptrace_sve_by(m, s, a) -> None:
    """sve_set_common() called by the tracer running on CPU a[1] for tracee a[2]."""
    _ptrace_sve(m, s, (PTRACE_SVE, a[2], 0))
    if not m.hc.sve_set_zeroes_target:
        # memset(&current->thread.uw.fpsimd_state, 0, ...): the tracer's saved
        # V0-V31 (its SVE image, if that is what it reloads from, is untouched).
        s[m.mem_lo[s[m.cur[a[1]]]]] = ZERO


def _new_value(m, s, u: int) -> int:
    v = s[m.ver[u]] + 1
    s[m.ver[u]] = v
    return tag(u, v)


def _ptrace_fp(m, s, a) -> None:
    u = a[1]
    x = _new_value(m, s, u)
    # fpr_set(): the FPSIMD image; then sve_sync_from_fpsimd_zeropad(): a task with
    # TIF_SVE gets an SVE image of V0-V31 padded with zeroes. Either way the task
    # resumes with zero Z upper bits, P and FFR (the NT_PRFPREG write is a V write).
    s[m.mem_lo[u]] = x
    if s[m.tif_sve[u]] or s[m.fp_type[u]] == FP_STATE_SVE:
        s[m.mem_zlo[u]] = x
        s[m.mem_hi[u]] = ZERO
    s[m.want_lo[u]] = x
    s[m.want_hi[u]] = ZERO
    s[m.permit[u]] = 0
    H.fpsimd_flush_task_state(m, s, u)


def _ptrace_sve(m, s, a) -> None:
    u = a[1]
    x = _new_value(m, s, u)
    # sve_set(): an SVE image, TIF_SVE set; the debugger's values must be kept.
    H._sve_alloc(m, s, u)   # sve_set_common(): sve_alloc(target, true) first
    s[m.mem_zlo[u]] = x
    s[m.mem_hi[u]] = x
    s[m.fp_type[u]] = FP_STATE_SVE
    if m.has_sme:
        s[m.svcr_sm[u]] = s[m.want_sm[u]] = 0   # NT_ARM_SVE leaves streaming mode
    if m.hc.ptrace_sve_sets_tif_sve or m.has_sme:
        s[m.tif_sve[u]] = 1   # (before 128a7494a9f1, only if system_supports_sme())
    s[m.want_lo[u]] = x
    s[m.want_hi[u]] = x
    s[m.permit[u]] = 0
    H.fpsimd_flush_task_state(m, s, u)


register(Feature(
    name="ptrace",
    actions={
        PTRACE_FP: ActionSpec("ptrace-fpsimd", _ptrace_fp, lambda m, s, a:
                              f"debugger: PTRACE_SETREGSET NT_PRFPREG on stopped "
                              f"{m.tname(a[1])}", budget="ptrace", cpu_arg=False),
        PTRACE_SVE: ActionSpec("ptrace-sve", _ptrace_sve, lambda m, s, a:
                               f"debugger: PTRACE_SETREGSET NT_ARM_SVE on stopped "
                               f"{m.tname(a[1])}", budget="ptrace", cpu_arg=False),
        PTRACE_SVE_BY: ActionSpec("ptrace-sve-by", _ptrace_sve_by, lambda m, s, a:
                                  f"{m.tname(s[m.cur[a[1]]])} (tracer, in ptrace()): "
                                  f"PTRACE_SETREGSET NT_ARM_SVE on stopped {m.tname(a[2])}",
                                  budget="ptrace"),
    },
    enabled=_tracer_enabled,
    enabled_global=_ptrace_enabled,
))

