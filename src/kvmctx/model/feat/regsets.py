"""sme-regsets: a debugger writes the SME state of a stopped task (with ``ptrace`` and ``sme``).

Without this feature SME tasks are never stopped for ptrace. With it they are
(``host_life._stopped``), so they also take the NT_PRFPREG and NT_ARM_SVE
writes of the ``ptrace`` feature (an NT_ARM_SVE write leaves streaming mode:
thread.svcr.SM cleared, sve_set_common() with ARM64_VEC_SVE), and four more
events, each a write to the stopped task's thread struct followed by
fpsimd_flush_task_state() (its binding invalidated, the return to EL0 reloads),
as arch/arm64/kernel/ptrace.c of v6.16+ does them:

* ``ptrace-ssve`` (kind 81): NT_ARM_SSVE with an SVE payload (sve_set_common(),
  ARM64_VEC_SME): SME storage kept, TIF_SME set (5d0a8d2fba50,
  ``HostConfig.ssve_write_sets_tif_sme``), thread.svcr.SM set, the data in the
  SVE image at the streaming VL, fp_type = SVE. The vector length stays (VL
  changes are issue 15 item 2).
* ``ptrace-za`` (kind 82): NT_ARM_ZA with data (za_set()): sme_alloc(flush)
  zeroes ZA and ZT0, the data is copied in, TIF_SME and thread.svcr.ZA set.
* ``ptrace-za-off`` (kind 83): NT_ARM_ZA with the header only: thread.svcr.ZA
  cleared (ZA and ZT0 off). Offered while ZA is on.
* ``ptrace-sve-fpsimd`` (kind 85): NT_ARM_SVE with SVE_PT_REGS_FPSIMD data to a
  task in streaming mode: SM cleared, TIF_SVE cleared, the FPSIMD image
  written (fp_type = FPSIMD); the way out of streaming mode for an SME task
  that does not use SVE (an SVE-format NT_ARM_SVE write needs an SVE task).
* ``ptrace-zt`` (kind 84): NT_ARM_ZT (zt_set()): with ZA off, ZA is allocated
  zeroed first; ZT0 is copied in and thread.svcr.ZA set (ZT0 is only
  accessible with ZA on), and TIF_SME set (2f43f549cd0b,
  ``HostConfig.zt_write_sets_tif_sme``; before it the first SME use trapped and
  do_sme_acc()'s sme_alloc(current, true) wiped the written value).

ZT0 is folded into the ZA bank (one tag for ZA and ZT0): a ZA write and a ZT
write are both a new version of that bank (the other half zeroed or kept is
part of the new value), and "ZA off" turns both off. What the model cannot
tell apart is a later access to one half only.

Every event spends the ``ptrace`` budget. Not modelled: GET (reads are
invariants here), VL changes through these regsets, NT_ARM_SSVE writes in
FPSIMD format or without a payload, FPMR's reaction to the SM change.
"""

from __future__ import annotations

from kvmctx.model import host as H
from kvmctx.model.feat.host_life import _new_value, _stopped
from kvmctx.model.features import ActionSpec, Feature, register
from kvmctx.model.values import FP_STATE_FPSIMD, FP_STATE_SVE, ZERO

PTRACE_SSVE = 81
PTRACE_ZA = 82
PTRACE_ZA_OFF = 83
PTRACE_ZT = 84
PTRACE_SVE_FPSIMD = 85


def _enabled_global(m, s, running, out) -> None:
    if not (m.sme_regsets and m.config.has("ptrace")):
        return
    for u in range(1, m.nthreads):
        if m.task_sme[u] and _stopped(m, s, u, running):
            out.append((PTRACE_SSVE, u, 0))
            out.append((PTRACE_ZA, u, 0))
            out.append((PTRACE_ZT, u, 0))
            if s[m.svcr_za[u]]:
                out.append((PTRACE_ZA_OFF, u, 0))
            if s[m.svcr_sm[u]]:
                out.append((PTRACE_SVE_FPSIMD, u, 0))


def _ptrace_ssve(m, s, a) -> None:
    u = a[1]
    x = _new_value(m, s, u)
    s[m.mem_zlo[u]] = x
    s[m.mem_hi[u]] = x
    s[m.fp_type[u]] = FP_STATE_SVE
    s[m.svcr_sm[u]] = s[m.want_sm[u]] = 1
    if m.hc.ssve_write_sets_tif_sme:
        s[m.tif_sme[u]] = 1
    s[m.want_lo[u]] = x
    s[m.want_hi[u]] = x
    s[m.permit[u]] = 0
    H._sve_alloc(m, s, u)   # sve_set_common(): sve_alloc(target, true)
    H.fpsimd_flush_task_state(m, s, u)


def _za_on(m, s, u: int, sets_tif_sme: bool) -> None:
    """The ZA/ZT0 bank gets a new value (ZA data, or ZT0 with ZA zeroed or kept)."""
    x = _new_value(m, s, u)
    s[m.mem_za[u]] = s[m.want_za[u]] = x
    s[m.svcr_za[u]] = s[m.want_zaon[u]] = 1
    H._sve_alloc(m, s, u)   # za_set()/zt_set() allocate sve_state first (2f43f549cd0b)
    if sets_tif_sme:
        s[m.tif_sme[u]] = 1
    H.fpsimd_flush_task_state(m, s, u)


def _ptrace_za(m, s, a) -> None:
    _za_on(m, s, a[1], True)


def _ptrace_zt(m, s, a) -> None:
    _za_on(m, s, a[1], m.hc.zt_write_sets_tif_sme)


def _ptrace_sve_fpsimd(m, s, a) -> None:
    """sve_set_common() with SVE_PT_REGS_FPSIMD data (ARM64_VEC_SVE): streaming mode
    off, TIF_SVE cleared, the FPSIMD image written (upper bits zero)."""
    u = a[1]
    x = _new_value(m, s, u)
    s[m.mem_lo[u]] = x
    s[m.fp_type[u]] = FP_STATE_FPSIMD
    s[m.tif_sve[u]] = 0
    s[m.svcr_sm[u]] = s[m.want_sm[u]] = 0
    s[m.want_lo[u]] = x
    s[m.want_hi[u]] = ZERO
    s[m.permit[u]] = 0
    H.fpsimd_flush_task_state(m, s, u)


def _ptrace_za_off(m, s, a) -> None:
    u = a[1]
    s[m.svcr_za[u]] = s[m.want_zaon[u]] = 0
    s[m.mem_za[u]] = s[m.want_za[u]] = ZERO   # off: nothing to keep
    H.fpsimd_flush_task_state(m, s, u)


def _text(what: str):
    return lambda m, s, a: f"debugger: PTRACE_SETREGSET {what} on stopped {m.tname(a[1])}"


register(Feature(
    name="sme-regsets",
    actions={
        PTRACE_SSVE: ActionSpec("ptrace-ssve", _ptrace_ssve,
                                _text("NT_ARM_SSVE (streaming SVE data: SM on)"),
                                budget="ptrace", cpu_arg=False),
        PTRACE_ZA: ActionSpec("ptrace-za", _ptrace_za, _text("NT_ARM_ZA (ZA data: ZA on)"),
                              budget="ptrace", cpu_arg=False),
        PTRACE_ZA_OFF: ActionSpec("ptrace-za-off", _ptrace_za_off,
                                  _text("NT_ARM_ZA, header only (ZA off)"),
                                  budget="ptrace", cpu_arg=False),
        PTRACE_ZT: ActionSpec("ptrace-zt", _ptrace_zt, _text("NT_ARM_ZT (ZT0 data: ZA on)"),
                              budget="ptrace", cpu_arg=False),
        PTRACE_SVE_FPSIMD: ActionSpec("ptrace-sve-fpsimd", _ptrace_sve_fpsimd,
                                      _text("NT_ARM_SVE, FPSIMD format (SM off)"),
                                      budget="ptrace", cpu_arg=False),
    },
    enabled_global=_enabled_global,
))
