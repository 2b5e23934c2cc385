"""The kernel paths, as programs of atomic steps with interruption marks.

Each host thread has a program counter into one compiled program: the
generic arm64 flow (user mode, syscalls, kernel-mode NEON, the KVM_RUN
ioctl and its run loop) with the policy's hook steps inlined. A *point* is
a place a thread can be between two atomic steps; it records what may land
there while the thread waits:

* ``sirq``: a softirq (and so softirq kernel-mode NEON) may run on this CPU
  (IRQs and bottom halves enabled);
* ``preempt``: the thread may be switched out (preemption enabled).

Consecutive steps with neither mark between them form one atomic action: no
other code can run on that CPU in between, and no other CPU can observe the
intermediate per-CPU or per-running-thread state, so merging them preserves
every behaviour (the usual partial-order argument). The story printer still
shows each step by name.

Point kinds:
``K_IDLE`` the idle thread; ``K_USER`` the thread at EL0; ``K_GUEST`` the
vCPU in the guest; ``K_REST`` a rest point of a kernel path whose step an
engine runs when it chooses; ``K_STEP`` inside a hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.policy import GAP_DEFAULT, GAP_NONE, GAP_SOFTIRQ, Policy, Step
from kvmctx.model.values import NO_CPU

K_IDLE = 0
K_USER = 1
K_GUEST = 2
K_REST = 3
K_STEP = 4

# Which context's integrity the invariant checks while a running thread is here.
CHK_NONE = 0
CHK_USER = 1     # the task at EL0 can read its registers at any time
CHK_GUEST = 2    # the guest can read them once its FP trap is off
CHK_KNEON = 3    # a task-context kernel-mode NEON user owns them

EXIT_KERNEL = 0  # exit handled in the kernel (WFx, SYS64, vgic MMIO, IRQ, HVC)
EXIT_USER = 1    # exit returned to the VMM's userspace (MMIO to a device model)

GAP_PREEMPT = "preempt"


@dataclass
class Point:
    name: str
    kind: int
    fn: object = None
    sirq: bool = False
    preempt: bool = False
    check: int = CHK_NONE
    where: str = ""
    hook: str = ""
    irqs_off: bool = False
    bh_off: bool = False


@dataclass
class Program:
    points: list[Point] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)

    def add(self, p: Point, label: str | None = None) -> int:
        i = len(self.points)
        self.points.append(p)
        if label:
            self.labels[label] = i
        return i

    def __getitem__(self, label: str) -> int:
        return self.labels[label]


# --------------------------------------------------------------------------
# Generic steps (the parts of the kernel paths that no design changes)


def st_syscall_return(m, s, k, t):
    """Syscall exit: ret_to_user reloads the task's state if foreign (IRQs off).

    With the feature ret-window, exit_to_user_mode() as Linux runs it: the reload
    in do_notify_resume() with IRQs on and syscallno still set, then the masked
    re-check (st_exit_check)."""
    if m.ret_window:
        H.fpsimd_restore_current_state(m, s, k, t)
        return m.L_EXIT_CHECK
    H.syscall_exit(m, s, k, t)
    H.fpsimd_restore_current_state(m, s, k, t)
    H.fpsimd_syscall_exit(m, s, k, t)
    return m.L_USER


def st_syscall_entry(m, s, k, t):
    """el0_svc_common(): regs->syscallno = scno, with IRQs already on."""
    s[m.insys[t]] = 1
    return m.L_SYS


def st_ioctl_entry(m, s, k, t):
    """el0_svc_common() for ioctl(KVM_RUN): syscallno recorded."""
    s[m.insys[t]] = 1
    return m.L_RUN


def st_exit_check(m, s, k, t):
    """exit_to_user_mode(): local_daif_mask(), flags re-read; TIF_FOREIGN_FPSTATE
    set again (a softirq or a switch landed after the reload) loops back into
    do_notify_resume() to reload; else the task returns to EL0 (syscallno is reset
    at its next entry, so in_syscall() is false from here on) and, from
    398edaa12f9c, fpsimd_syscall_exit() ends the lazy discard."""
    if s[m.foreign[t]]:
        H.fpsimd_restore_current_state(m, s, k, t)
        return m.L_EXIT_CHECK
    if s[m.insys[t]]:
        H.syscall_exit(m, s, k, t)
        H.fpsimd_syscall_exit(m, s, k, t)
    return m.L_USER


def st_sve_acc(m, s, k, t):
    """do_sve_acc() after sve_alloc(): get_cpu_fpsimd_context() .. put (no softirq,
    no preemption in between)."""
    H.do_sve_acc(m, s, k, t)
    return m.L_TRAP_PUT


def st_sme_acc(m, s, k, t):
    """do_sme_acc() after sve_alloc()/sme_alloc(): its body under the FP context."""
    H.do_sme_acc(m, s, k, t)
    return m.L_TRAP_PUT


def st_trap_return(m, s, k, t):
    """el0_sve_acc/el0_sme_acc: exit_to_user_mode() reloads the task's state if
    foreign; the access is retried at EL0."""
    H.fpsimd_restore_current_state(m, s, k, t)
    return m.L_EXIT_CHECK if m.ret_window else m.L_USER


def st_kneon_end(m, s, k, t):
    H.kernel_neon_end(m, s, k, False)
    return m.L_SYS


def st_vcpu_load_prologue(m, s, k, t):
    """kvm_main.c vcpu_load(): get_cpu(); preempt notifier on; vcpu->cpu = cpu."""
    s[m.vcpu_cpu[m.vcpu_of[t]]] = k
    m.ctr[C.VCPU_LOADS] += 1


def st_enter_irqoff(m, s, k, t):
    """Run loop: preempt_disable(); local_irq_disable(); about to enter."""
    m.ctr[C.GUEST_ENTRIES] += 1


def st_to_guest(m, s, k, t):
    return m.L_GUEST


def st_irq_enable(m, s, k, t):
    """local_irq_enable() after the exit: softirqs may run from here."""
    return None


def st_handle_exit(m, s, k, t):
    """preempt_enable(); handle_exit(): back into the loop or out to userspace."""
    v = m.vcpu_of[t]
    # The exit class is dead until the next exit. (The guest trap setting is not:
    # it stays as the last entry left it, so a design that forgets to set it at
    # entry is caught; mutation testing found the earlier normalisation hid that.)
    if s[m.exitcls[v]] == EXIT_USER:
        s[m.exitcls[v]] = EXIT_KERNEL
        m.ctr[C.EXITS_TO_USER] += 1
        return m.L_OUT
    return m.L_TOP


def st_put_epilogue(m, s, k, t):
    """vcpu_put(): notifier off; vcpu->cpu = -1; preempt_enable()."""
    s[m.vcpu_cpu[m.vcpu_of[t]]] = NO_CPU
    m.ctr[C.VCPU_PUTS] += 1


def st_ioctl_return(m, s, k, t):
    """KVM_RUN returns to the VMM: ret_to_user reloads its state if foreign."""
    if m.ret_window:
        H.fpsimd_restore_current_state(m, s, k, t)
        return m.L_EXIT_CHECK
    H.syscall_exit(m, s, k, t)
    H.fpsimd_restore_current_state(m, s, k, t)
    H.fpsimd_syscall_exit(m, s, k, t)
    return m.L_USER


def st_sched_in_resume(m, s, k, t):
    """kvm_sched_in() done: finish_task_switch() returns into the preempted code."""
    pc = s[m.resume[t]]
    s[m.resume[t]] = 0
    return pc


def _marks(gap: str, default: str) -> tuple[bool, bool]:
    g = default if gap == GAP_DEFAULT else gap
    if g == GAP_NONE:
        return False, False
    if g == GAP_SOFTIRQ:
        return True, False
    if g == GAP_PREEMPT:
        return True, True
    raise ValueError(f"unknown gap {gap!r}")


def _hook(prog: Program, hook: str, steps: tuple[Step, ...], default_gap: str,
          first_gap: str | None = None, irqs_off: bool = False, bh_off: bool = False) -> None:
    for i, st in enumerate(steps):
        gap = st.gap
        if i == 0 and first_gap is not None and gap == GAP_DEFAULT:
            gap = first_gap
        sirq, pre = _marks(gap, default_gap)
        prog.add(Point(
            name=st.name, kind=K_STEP, fn=st.fn, sirq=sirq, preempt=pre, where=st.where,
            hook=hook,
            irqs_off=irqs_off if st.irqs_off is None else st.irqs_off,
            bh_off=bh_off if st.bh_off is None else st.bh_off,
        ))


def build_program(policy: Policy, kernel_neon_preemptible: bool,
                  extra: dict[str, tuple[Step, ...]] | None = None) -> Program:
    """Inline a policy's hooks (and features' extra steps per hook) into the flow."""
    extra = extra or {}
    sysreg_load = extra.get("vcpu_load", ())
    sysreg_put = extra.get("vcpu_put", ())
    P = Program()
    P.add(Point("idle", K_IDLE, sirq=True, preempt=True), "IDLE")
    P.add(Point("at EL0", K_USER, sirq=True, preempt=True, check=CHK_USER), "USER")
    P.add(Point("in a syscall", K_REST, fn=st_syscall_return, sirq=True, preempt=True,
                where="arch/arm64/kernel/entry-common.c: ret_to_user"), "SYS")
    P.add(Point("kernel-mode NEON section (task)", K_REST, fn=st_kneon_end, sirq=True,
                preempt=kernel_neon_preemptible, check=CHK_KNEON,
                where="arch/arm64/kernel/fpsimd.c: kernel_neon_end"), "KNEON")
    # EL0 SVE/SME access traps (feature trap-window): el0_sve_acc() unmasks IRQs
    # before do_sve_acc(), whose sve_alloc() may sleep; only the body between
    # get_cpu_fpsimd_context() and put_cpu_fpsimd_context() is atomic.
    P.add(Point("SVE access trap: IRQs on, sve_alloc()", K_REST, fn=st_sve_acc, sirq=True,
                preempt=True, where="arch/arm64/kernel/fpsimd.c: do_sve_acc"), "SVE_TRAP")
    P.add(Point("SME access trap: IRQs on, sme_alloc()", K_REST, fn=st_sme_acc, sirq=True,
                preempt=True, where="arch/arm64/kernel/fpsimd.c: do_sme_acc"), "SME_TRAP")
    P.add(Point("access trap handled: put_cpu_fpsimd_context() done", K_REST,
                fn=st_trap_return, sirq=True, preempt=True,
                where="arch/arm64/kernel/entry-common.c: exit_to_user_mode"), "TRAP_PUT")
    # The return to EL0 and the syscall entry (feature ret-window).
    P.add(Point("exit_to_user_mode: reloaded, IRQs on", K_REST, fn=st_exit_check,
                sirq=True, preempt=True,
                where="arch/arm64/kernel/signal.c: do_notify_resume"), "EXIT_CHECK")
    P.add(Point("el0_svc: fp_user_discard() done, IRQs on", K_REST, fn=st_syscall_entry,
                sirq=True, preempt=True,
                where="arch/arm64/kernel/syscall.c: el0_svc_common"), "SYS_ENTRY")
    P.add(Point("el0_svc (KVM_RUN): fp_user_discard() done, IRQs on", K_REST,
                fn=st_ioctl_entry, sirq=True, preempt=True,
                where="arch/arm64/kernel/syscall.c: el0_svc_common"), "RUN_ENTRY")

    # KVM_RUN ioctl: vcpu_load, the run loop, vcpu_put, return to the VMM.
    P.add(Point("KVM_RUN: vcpu_load()", K_REST, fn=st_vcpu_load_prologue, sirq=True,
                preempt=True, where="virt/kvm/kvm_main.c: vcpu_load"), "RUN")
    _hook(P, "vcpu_load", policy.vcpu_load, GAP_SOFTIRQ, first_gap=GAP_NONE)
    _hook(P, "vcpu_load", sysreg_load, GAP_SOFTIRQ)
    # Fall through to the loop top. Features may add request checks there
    # (check_vcpu_requests(), preemptible, IRQs on): a check returns a label to
    # branch to, or None to go on and enter.
    top = extra.get("loop_top", ())
    P.add(Point("run loop: check_vcpu_requests(), enter the guest" if top else
                "run loop: enter the guest", K_REST, fn=_with_requests(top), sirq=True,
                preempt=True, where="arch/arm64/kvm/arm.c: kvm_arch_vcpu_ioctl_run"), "TOP")
    _hook(P, "ctxflush", policy.ctxflush, GAP_NONE, irqs_off=True)
    _hook(P, "guest_entry", policy.guest_entry, GAP_NONE, irqs_off=True)
    _hook(P, "guest_entry", extra.get("guest_entry", ()), GAP_NONE, irqs_off=True)
    P.add(Point("hyp: eret to the guest", K_STEP, fn=st_to_guest, irqs_off=True))
    P.add(Point("in the guest", K_GUEST, check=CHK_GUEST), "GUEST")
    exit_start = len(P.points)
    P.labels["EXIT"] = exit_start
    _hook(P, "hyp_exit", policy.hyp_exit, GAP_NONE, irqs_off=True)
    _hook(P, "hyp_exit", extra.get("hyp_exit", ()), GAP_NONE, irqs_off=True)
    _hook(P, "ctxsync", policy.ctxsync, GAP_NONE, irqs_off=True)
    _hook(P, "post_exit", policy.post_exit, GAP_SOFTIRQ)
    if len(P.points) == exit_start:
        P.add(Point("local_irq_enable()", K_STEP, fn=st_irq_enable, irqs_off=True))
    P.add(Point("run loop: exit handled with IRQs on", K_REST, fn=st_handle_exit, sirq=True,
                where="arch/arm64/kvm/arm.c: handle_exit"), "POST")
    P.add(Point("KVM_RUN: leaving the run loop", K_REST, fn=None, sirq=True, preempt=True),
          "OUT")
    out = P.labels["OUT"]
    _hook(P, "run_exit", policy.run_exit, GAP_PREEMPT, first_gap=GAP_NONE)
    _hook(P, "vcpu_put", policy.vcpu_put, GAP_SOFTIRQ, first_gap=GAP_NONE)
    _hook(P, "vcpu_put", sysreg_put, GAP_SOFTIRQ)
    P.add(Point("vcpu_put(): vcpu->cpu = -1", K_STEP, fn=st_put_epilogue,
                where="virt/kvm/kvm_main.c: vcpu_put"))
    P.add(Point("KVM_RUN returns to the VMM", K_REST, fn=st_ioctl_return, sirq=True,
                preempt=True, where="arch/arm64/kernel/entry-common.c: ret_to_user"), "RET")
    # The OUT point's own step is a no-op that falls through to run_exit/vcpu_put.
    P.points[out].fn = st_irq_enable

    # Sched-in (kvm_sched_in -> kvm_arch_vcpu_load), preempt off, IRQs on.
    P.add(Point("kvm_sched_in: vcpu_load()", K_STEP, fn=st_vcpu_load_prologue, sirq=True,
                where="virt/kvm/kvm_main.c: kvm_sched_in"), "SCHED_IN")
    _hook(P, "vcpu_load", policy.vcpu_load, GAP_SOFTIRQ, first_gap=GAP_NONE)
    _hook(P, "vcpu_load", sysreg_load, GAP_SOFTIRQ)
    P.add(Point("finish_task_switch(): resume", K_STEP, fn=st_sched_in_resume))
    reset = extra.get("vcpu_reset", ())
    if reset:
        _reset_segment(P, policy, reset, sysreg_load, sysreg_put)
    # Features' own kernel paths: "rest:LABEL" -> one point per step, softirqs and
    # preemption allowed in front of it (feature sig-frames: the signal frame copies).
    for key in sorted(k for k in extra if k.startswith("rest:")):
        for i, st in enumerate(extra[key]):
            P.add(Point(st.name, K_REST, fn=st.fn, sirq=True, preempt=True, where=st.where),
                  key[5:] if i == 0 else None)
    return P


def _with_requests(checks: tuple[Step, ...]):
    if not checks:
        return st_enter_irqoff

    def st_top(m, s, k, t):
        """check_vcpu_requests(), then (no request to serve) enter the guest."""
        for st in checks:
            nxt = st.fn(m, s, k, t)
            if nxt is not None:
                return nxt
        return st_enter_irqoff(m, s, k, t)

    return st_top


def st_reset_done(m, s, k, t):
    """kvm_reset_vcpu() returns (preempt_enable()); back to the run loop's top."""
    return m.L_TOP


def _reset_segment(P: Program, policy: Policy, reset: tuple[Step, ...],
                   sysreg_load: tuple[Step, ...], sysreg_put: tuple[Step, ...]) -> None:
    """kvm_reset_vcpu() called from the run loop (KVM_REQ_VCPU_RESET), label VRESET.

    From e761a927bc9a (v5.0) it runs with preemption disabled and IRQs on: a
    loaded vCPU is put (kvm_arch_vcpu_put), its image reset, and loaded again;
    softirqs may land between the three. Before it, the image was reset in
    preemptible context with the vCPU still loaded (HostConfig.reset_puts_vcpu).
    """
    P.labels["VRESET"] = len(P.points)
    hook = "kvm_reset_vcpu"
    if policy.host.reset_puts_vcpu:
        _hook(P, hook, policy.vcpu_put, GAP_SOFTIRQ, first_gap=GAP_NONE)
        _hook(P, hook, sysreg_put, GAP_SOFTIRQ)
        P.add(Point("kvm_arch_vcpu_put(): vcpu->cpu = -1", K_STEP, fn=st_put_epilogue,
                    where="arch/arm64/kvm/arm.c: kvm_arch_vcpu_put", hook=hook))
        _hook(P, hook, reset, GAP_SOFTIRQ)
        P.add(Point("kvm_arch_vcpu_load(): vcpu->cpu = cpu", K_STEP, fn=st_vcpu_load_prologue,
                    sirq=True, where="arch/arm64/kvm/reset.c: kvm_reset_vcpu", hook=hook))
        _hook(P, hook, policy.vcpu_load, GAP_SOFTIRQ, first_gap=GAP_NONE)
        _hook(P, hook, sysreg_load, GAP_SOFTIRQ)
    else:
        _hook(P, hook, reset, GAP_PREEMPT)
    puts = policy.host.reset_puts_vcpu
    P.add(Point("kvm_reset_vcpu() done: preempt_enable()" if puts else
                "kvm_reset_vcpu() returns", K_STEP, fn=st_reset_done, sirq=True,
                preempt=not puts, where="arch/arm64/kvm/reset.c: kvm_reset_vcpu", hook=hook))
