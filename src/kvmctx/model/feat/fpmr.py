"""fpmr: FEAT_FPMR, the FP8 mode register, saved and loaded with the FP state (v6.9 on).

FPMR is one 64-bit register that belongs to the FP state of a task
(thread.uw.fpmr) or of a vCPU (__vcpu_sys_reg(vcpu, FPMR)). It is a tag bank
of its own: per CPU the live register, per context the saved value and a ghost
for the latest value. What Linux does with it (arch/arm64/kernel/fpsimd.c,
arch/arm64/kvm/fpsimd.c, arch/arm64/kvm/hyp/include/hyp/switch.h,
arch/arm64/kvm/hyp/nvhe/hyp-main.c as of v6.14 plus the 2025 fixes) and where
the model does it:

* save: fpsimd_save_user_state() writes FPMR through the binding's ``fpmr``
  pointer (the task's, or the vCPU's FPMR sysreg bound by ctxsync) right after
  the TIF_FOREIGN_FPSTATE test (``kvmctx.model.host``);
* load: task_fpsimd_load() writes FPMR *after* SVCR (e5fa85fce08b: "When we
  enter or exit streaming mode FPMR is reset to 0 ... we need to restore FPMR
  after we restore SVCR"); before the fix it came first and a load that
  changed PSTATE.SM zeroed it (``HostConfig.fpmr_after_svcr``);
* architecture: any change of PSTATE.SM (SMSTART/SMSTOP at EL0, the SVCR write
  of a load, the kernel's SMSTOP in a CPU flush or at syscall entry) zeroes
  FPMR; a task's own SM change makes its latest FPMR zero;
* exec: fpsimd_flush_thread() zeroes thread.uw.fpmr (a90878f297d3,
  ``HostConfig.exec_resets_fpmr``); the new program's FPMR is zero;
* KVM: the hyp FP trap restores the guest's FPMR with its registers
  (kvm_hyp_handle_fpsimd, ``if (kvm_has_fpmr(...)) write_sysreg_s(...)``);
  ctxsync binds the vCPU's FPMR, so the host saves it like a task's; pKVM's
  fpsimd_sve_sync saves the guest's FPMR at exit and restores the host's from
  host_data; kvm_reset_vcpu() resets it to 0 (kvm_reset_sys_regs).

Events: ``user-fpmr`` (kind 52), a task at EL0 writes FPMR (MSR FPMR; EL0 FP
never traps in Linux); ``guest-fpmr`` (kind 53), the guest writes FPMR once
its FP registers are live (a first FP access traps through the same handler
as ``guest-fp``); with ``ptrace`` on, ``ptrace-fpmr`` (kind 54): a debugger
writes a stopped task's NT_ARM_FPMR (fpmr_set: thread.uw.fpmr, then
fpsimd_flush_task_state). Invariants: a task at EL0 and a guest with its FP trap off
read their latest FPMR; at rest every context's FPMR is in memory or live on
the one CPU bound to it.

Not modelled: the FPMR signal record (issue 15 item 1).
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.features import ActionSpec, Feature, register
from kvmctx.model.flow import CHK_GUEST, CHK_USER, K_GUEST, K_USER
from kvmctx.model.layout import CPU, CTX
from kvmctx.model.values import OWNER_BITS, ZERO

TAG_FPMR = "tag_fpmr"
USER_FPMR = 52
GUEST_FPMR = 53
PTRACE_FPMR = 54


def _new_tag(m, s, c: int) -> int:
    v = s[m.ver[c]] + 1
    s[m.ver[c]] = v
    return (v << OWNER_BITS) | c


def _enabled(m, s, k, t, pc, kind, out) -> None:
    if kind == K_USER:
        out.append((USER_FPMR, k, 0))
    elif kind == K_GUEST and not s[m.gtrap[k]]:
        out.append((GUEST_FPMR, k, 0))


def _user_fpmr(m, s, a) -> None:
    k = a[1]
    t = s[m.cur[k]]
    x = _new_tag(m, s, t)
    s[m.fpmr[k]] = x
    s[m.want_fpmr[t]] = x
    m.ctr[C.FPMR_WRITES] += 1


def _guest_fpmr(m, s, a) -> None:
    k = a[1]
    c = m.vctx[m.vcpu_of[s[m.cur[k]]]]
    x = _new_tag(m, s, c)
    s[m.fpmr[k]] = x
    s[m.want_fpmr[c]] = x
    m.ctr[C.FPMR_WRITES] += 1


def _ptrace_enabled(m, s, running, out) -> None:
    if not m.config.has("ptrace"):
        return
    from kvmctx.model.feat.host_life import _stopped

    for u in range(1, m.nthreads):
        if _stopped(m, s, u, running):
            out.append((PTRACE_FPMR, u, 0))


def _ptrace_fpmr(m, s, a) -> None:
    """fpmr_set(): thread.uw.fpmr = the debugger's value; fpsimd_flush_task_state()."""
    u = a[1]
    x = _new_tag(m, s, u)
    s[m.mem_fpmr[u]] = x
    s[m.want_fpmr[u]] = x
    H.fpsimd_flush_task_state(m, s, u)


def _check_cpu(m, s, k) -> None:
    t = s[m.cur[k]]
    if not t:
        return
    chk = m.p_check[s[m.pc[t]]]
    if chk == CHK_USER:
        c = t
    elif chk == CHK_GUEST and not s[m.gtrap[k]]:
        c = m.vctx[m.vcpu_of[t]]
    else:
        return
    got = s[m.fpmr[k]]
    if got != s[m.want_fpmr[c]]:
        m._bad_read(s, k, c, "FPMR", got, s[m.want_fpmr[c]], m.want_fpmr)


def _check_state(m, s) -> None:
    """Recoverability of FPMR: in memory, or live on the one CPU bound to it."""
    exempt = m.exempt(s)
    for c, _is_thread, _hi in m.rec_ctx:
        if c in exempt:
            continue
        want = s[m.want_fpmr[c]]
        if s[m.mem_fpmr[c]] == want:
            continue
        live = [k for k in range(m.ncpu) if s[m.bound[k]] == c and s[m.fpmr[k]] == want]
        if len(live) == 1:
            continue
        m.violate("recoverability", f"the FPMR of {m.name(c)} ({m.tagname(want)}) is neither "
                  "in memory nor live on a CPU bound to it: it is lost", -1, (c,))
        return


register(Feature(
    name="fpmr",
    fields=(
        ("fpmr", "cpu.regs.fpmr", CPU, ZERO, TAG_FPMR),
        ("mem_fpmr", "ctx.fpmr", CTX, ZERO, TAG_FPMR),
        ("want_fpmr", "ghost.latest.fpmr", CTX, ZERO, TAG_FPMR),
    ),
    actions={
        USER_FPMR: ActionSpec("user-fpmr", _user_fpmr, lambda m, s, a:
                              f"{m.tname(s[m.cur[a[1]]])}: writes FPMR at EL0"),
        GUEST_FPMR: ActionSpec("guest-fpmr", _guest_fpmr, lambda m, s, a:
                               f"{m.name(m.vctx[m.vcpu_of[s[m.cur[a[1]]]]])}: guest writes "
                               "FPMR"),
        PTRACE_FPMR: ActionSpec("ptrace-fpmr", _ptrace_fpmr, lambda m, s, a:
                                f"debugger: PTRACE_SETREGSET NT_ARM_FPMR on stopped "
                                f"{m.tname(a[1])}", budget="ptrace", cpu_arg=False),
    },
    enabled=_enabled,
    enabled_global=_ptrace_enabled,
    check_cpu=_check_cpu,
    check_state=_check_state,
    banks=((TAG_FPMR, "want_fpmr"),),
))
