"""isb: trap-control writes take effect only at a context synchronisation event.

A write to CPACR_EL1 / CPTR_EL2 (FPEN, ZEN, SMEN) changes what traps only
after the next context synchronisation event: an ISB, an exception entry or an
exception return (ERET). Until then the CPU traps by the old setting. The
feature models that for the one control the host kernel itself depends on and
KVM rewrites outside the hypervisor: the host's own SME access under VHE
(CPACR_EL1.SMEN_EL1EN, which is CPTR_EL2.SMEN with HCR_EL2.E2H = 1). Per CPU it
keeps the value written and the value in effect; an access by the kernel's FP
code (fpsimd_save_user_state() reading SVCR, the SMSTOP of
fpsimd_flush_cpu_state()) checks the value in effect, and an SME trap taken by
the kernel itself is an unhandled exception (no-bug invariant).

Where Linux synchronises, and where the model does:

* exception entry: a softirq (the IRQ that runs it), a syscall or any other
  event taken from EL0, a guest exit; exception return: every way back to EL0
  and into the guest. In ``Model.apply`` a softirq, and every action that
  starts from EL0, the guest or the idle loop (an EL0 or guest event, a
  syscall, a guest exit, a switch away from a task preempted at EL0), first
  synchronises its CPU (``sync_before``). An action that starts inside a
  kernel path does not: a kernel step, task-context kernel-mode NEON, a switch
  after preempt_enable() needs no exception.
* the hypervisor: the VHE exit writes the host's CPACR (its SMEN_EL1EN from
  375110ab51de; before it 0b00, host SME trapped) and __kvm_vcpu_run() issues
  an isb() before the host runs, so the exit step writes a synchronised value
  (``HostConfig.hyp_exit_enables_host_sme``). The guest's own trap setting is
  synchronised by the ERET into the guest and rewritten at the exit; it is not
  kept.
* kvm_arch_vcpu_put_fp() from 861262ab8627 (v5.19) to 407a99c4654e (v6.14)
  re-enabled SMEN for the host under VHE; 59d78a2ec0e9 (v6.2) added the isb()
  after that write (``HostConfig.put_syncs_smen``). v6.14 has no such write, so
  the step (``PUT_RESTORE_SMEN``) is only in the mutants that put it back.

EL0 trap controls (ZEN/SMEN_EL0EN, written by fpsimd_bind_task_to_cpu) are
not tracked: they matter only at EL0, and every way to EL0 is an ERET, so EL0
never runs under a pending write ("serialised by ret_to_user()"). The
hypervisor's FP trap handler writes CPTR and issues an isb() before it
restores the guest's registers, in the same atomic step.
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model.features import Feature, register
from kvmctx.model.flow import K_GUEST, K_USER
from kvmctx.model.layout import CPU
from kvmctx.model.machine import KNEON, MIGRATE, SIRQ, STEP
from kvmctx.model.policy import Step

KVM_FPSIMD = "arch/arm64/kvm/fpsimd.c"
VHE_SWITCH = "arch/arm64/kvm/hyp/vhe/switch.c"


def isb(m, s, k: int) -> None:
    """A context synchronisation event on CPU k: every written trap control takes effect."""
    s[m.hsmen_eff[k]] = s[m.hsmen[k]]


def host_sme_access(m, s, k: int, what: str) -> None:
    """The kernel (EL1, EL2 under VHE) touches SME state on CPU k: it must not trap."""
    if not s[m.hsmen_eff[k]]:
        pend = " (written, but no ISB since)" if s[m.hsmen[k]] else ""
        m.violate("no-bug", f"{what} on CPU{k} traps: host SME access is disabled in "
                  f"CPTR_EL2.SMEN{pend}; an SME trap from the kernel is an unhandled "
                  "exception (panic)", k, ())


def sync_before(m, s, a) -> None:
    """Model.apply's hook, before action a on CPU a[1]: synchronise the CPU when the
    action begins with an exception entry (a softirq's IRQ) or starts from EL0, the
    guest or the idle loop (all reached by an ERET or woken by an interrupt). A kernel
    step, task-context kernel-mode NEON, a tracer's ptrace() inside its syscall or a
    switch from a kernel path (preempt_enable() -> schedule()) take no exception."""
    kind = a[0]
    if kind in (STEP, MIGRATE, KNEON):
        return
    k = a[1]
    if kind != SIRQ:
        spec = m.ext_actions.get(kind)
        if spec is not None and not spec.cpu_arg:
            return      # a global event (ptrace of a stopped task, PSCI CPU_ON)
        t = s[m.cur[k]]
        if t and m.p_kind[s[m.pc[t]]] not in (K_USER, K_GUEST):
            return
    isb(m, s, k)


def st_hyp_exit_smen(m, s, k, t):
    """VHE exit: CPACR_EL1 (CPTR_EL2) back to the host's value, then the isb() in
    __kvm_vcpu_run(); from 375110ab51de with SMEN_EL1EN set."""
    if m.config.vhe:
        v = 1 if m.hc.hyp_exit_enables_host_sme else 0
        s[m.hsmen[k]] = v
        s[m.hsmen_eff[k]] = v


def st_put_restore_smen(m, s, k, t):
    """kvm_arch_vcpu_put_fp() before 407a99c4654e (VHE): re-enable host SME access
    (SMEN_EL1EN; SMEN_EL0EN from HOST_SME_ENABLED, kept in the model's EL0 bit);
    isb() from 59d78a2ec0e9."""
    if not (m.config.vhe and m.has_isb):
        return
    if not s[m.hsmen[k]]:
        s[m.hsmen[k]] = 1
        m.ctr[C.TRAP_WRITES] += 1
    if m.hc.put_syncs_smen:
        isb(m, s, k)
        m.ctr[C.ISBS] += 1


PUT_RESTORE_SMEN = Step(st_put_restore_smen,
                        "VHE: re-enable host SME in CPACR_EL1 (SMEN_EL1EN)",
                        f"{KVM_FPSIMD}: kvm_arch_vcpu_put_fp")


def with_put_restore_smen(p):
    """The design with kvm_arch_vcpu_put_fp()'s SMEN restore of v5.19..v6.13 put back
    in front of its vcpu_put hook."""
    return p.but(vcpu_put=(PUT_RESTORE_SMEN,) + tuple(p.vcpu_put))


def _steps(m):
    return {"hyp_exit": (Step(st_hyp_exit_smen, "VHE: host CPACR_EL1 (SMEN) restored; "
                              "isb() in __kvm_vcpu_run()", f"{VHE_SWITCH}: __kvm_vcpu_run"),)}


register(Feature(
    name="isb",
    fields=(
        ("hsmen", "cpu.cptr.smen_el1", CPU, 1, None),
        ("hsmen_eff", "cpu.cptr.smen_el1.effective", CPU, 1, None),
    ),
    steps=_steps,
))
