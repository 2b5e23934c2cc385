"""Mutants of KVM's vCPU reset and ONE_REG paths, and of FPMR (issue 15, items 4 and 6).

Each is upstream-6.14 with one fix undone (a HostConfig flag) or, for the design
mutant, one hook changed, checked at bounds that switch on the feature it needs
(kvmctx.model.feat.vcpu_reset, kvmctx.model.feat.fpmr).
"""

from __future__ import annotations

from kvmctx.catalogue.mutants import Mutant, _host, register
from kvmctx.engines.checker import Bounds, register_bounds
from kvmctx.policies.base import Policy, Step

register_bounds(Bounds(
    "kvm-reset", cpus=1, fpsimd_tasks=1, sve_tasks=0, vcpus=1, vcpu_sve=True,
    features=frozenset({"guest-sve", "softirq-neon", "preempt", "exit-user", "vcpu-reset",
                        "one-reg"}),
    budgets=(("one-reg", 1), ("softirq", 1), ("switch", 2), ("vcpu-reset", 1)),
    description="1 CPU, 1 FPSIMD task, a VMM with 1 SVE vCPU (VL256); PSCI CPU_ON resets "
                "(KVM_REQ_VCPU_RESET served in the run loop: put, reset, load), "
                "KVM_SET_ONE_REG of a Z register and KVM_GET_ONE_REG (an invariant) while "
                "the vCPU is not loaded, softirq kernel-mode NEON, preemption; at most one "
                "reset request, one SET_ONE_REG, one softirq, 2 switch-outs"))

register_bounds(Bounds(
    "kvm-reset-fpmr", cpus=1, fpsimd_tasks=1, sve_tasks=0, vcpus=1, vcpu_sve=True,
    features=frozenset({"guest-sve", "softirq-neon", "preempt", "exit-user", "vcpu-reset",
                        "one-reg", "fpmr"}),
    budgets=(("one-reg", 1), ("softirq", 1), ("switch", 2), ("vcpu-reset", 1)),
    description="kvm-reset with FPMR: the guest's and the tasks' FPMR saved, restored by "
                "the hyp FP trap, reset by kvm_reset_vcpu() and read by KVM_GET_ONE_REG"))

register(Mutant(
    name="reset-without-put", base="upstream-6.14", source="e761a927bc9a", catalogue=26,
    invariant="recoverability",
    description="kvm_reset_vcpu() resets the vCPU's image in memory while the vCPU is still "
                "loaded (no kvm_arch_vcpu_put/load around it, preemptible): the guest state "
                "live and bound since ctxsync survives the reset, and the next save (a "
                "softirq's kernel-mode NEON, a context switch) writes it over the reset "
                "image, or the guest resumes on it",
    transform=_host(reset_puts_vcpu=False), bounds="kvm-reset"))

register(Mutant(
    name="one-reg-before-reset", base="upstream-6.14", source="6826c6849b46", catalogue=27,
    invariant="integrity",
    description="KVM_GET/SET_ONE_REG do not serve a pending KVM_REQ_VCPU_RESET: user space "
                "reads the pre-reset registers (a VMM saving the vCPU migrates state it "
                "will never run with) and a SET is wiped by the reset at the next KVM_RUN",
    transform=_host(one_reg_serves_reset=False), bounds="kvm-reset"))


def _put_leaves_guest_live(p: Policy) -> Policy:
    """vcpu_put leaves a guest-owned state live and bound (the next context switch or
    kernel-mode NEON saves it through the binding, as for a task); only the way back
    to user space (run_exit) saves and flushes it, so the VMM reloads its own."""
    from kvmctx.policies import upstream_6_14 as U

    def put_fp_lazy(m, s, k, t):
        return None

    return p.but(
        run_exit=(Step(U.put_fp, "KVM_RUN returning: if GUEST_OWNED: save + flush",
                       f"{U.KVM_FPSIMD}: kvm_arch_vcpu_put_fp (moved)"),),
        vcpu_put=(Step(put_fp_lazy, "guest state left live and bound (saved on the next "
                                    "switch or kernel-mode NEON)", U.KVM_FPSIMD),))


register(Mutant(
    name="put-leaves-guest-live", base="upstream-6.14",
    source="design (issue 15 item 6): guest state kept live past vcpu_put", catalogue=None,
    invariant="recoverability",
    description="kvm_arch_vcpu_put_fp() leaves the guest's registers live and bound; the "
                "sched-out context switch saves them through the binding and KVM_RUN saves "
                "them before returning to user space, so no run without resets sees a "
                "difference; kvm_reset_vcpu()'s put leaves them live and the load saves "
                "them over the reset image",
    transform=_put_leaves_guest_live, bounds="kvm-reset"))


# ------------------------------------------------------------------ FPMR (14, 16)

register_bounds(Bounds(
    "host-fpmr", cpus=1, fpsimd_tasks=1, sve_tasks=0, sme_tasks=1, vcpus=1,
    features=frozenset({"sme", "fpmr", "exec", "ptrace", "preempt", "exit-user",
                        "softirq-neon"}),
    budgets=(("exec", 1), ("ptrace", 1), ("softirq", 1), ("switch", 2)),
    description="1 CPU, 1 FPSIMD task that may execve, 1 SME task (streaming mode, ZA), a "
                "VMM with 1 vCPU; FPMR written at EL0, by the guest and by a debugger "
                "(NT_ARM_FPMR, NT_PRFPREG), saved and loaded with the FP state; softirq "
                "kernel-mode NEON"))

register(Mutant(
    name="fpmr-before-svcr", base="upstream-6.14", source="e5fa85fce08b", catalogue=14,
    invariant="integrity",
    description="task_fpsimd_load() writes FPMR before SVCR: when the load changes PSTATE.SM "
                "(a streaming task switched in after a non-streaming one) the mode change "
                "zeroes the FPMR just restored",
    transform=_host(fpmr_after_svcr=False), bounds="host-fpmr"))

register(Mutant(
    name="exec-keeps-fpmr", base="upstream-6.14", source="a90878f297d3", catalogue=16,
    invariant="recoverability",
    description="fpsimd_flush_thread() does not reset thread.uw.fpmr: the new program's "
                "zero FPMR is nowhere, and its first reload brings back the FPMR the old "
                "program last saved",
    transform=_host(exec_resets_fpmr=False), bounds="host-fpmr"))


# ------------------------------------------------------------------ ptrace (13)

register_bounds(Bounds(
    "host-ptrace-sve", cpus=1, fpsimd_tasks=1, sve_tasks=1, vcpus=1,
    features=frozenset({"sve", "ptrace", "preempt", "exit-user", "softirq-neon"}),
    budgets=(("ptrace", 1), ("softirq", 1), ("switch", 2)),
    description="1 CPU, 1 FPSIMD task that may trace, 1 SVE task (VL256) a debugger (or "
                "the FPSIMD task, from inside ptrace()) may write through NT_PRFPREG or "
                "NT_ARM_SVE while it is stopped, a VMM with 1 vCPU; softirq kernel-mode "
                "NEON; no SME"))

register(Mutant(
    name="ptrace-sve-keeps-tif-sve-clear", base="upstream-6.14", source="128a7494a9f1",
    catalogue=13, invariant="no-bug",
    description="on an SVE system without SME an NT_ARM_SVE write stores the image in "
                "FP_STATE_SVE format but leaves TIF_SVE clear: the next reload warns in "
                "task_fpsimd_load()",
    transform=_host(ptrace_sve_sets_tif_sve=False), bounds="host-ptrace-sve"))

register(Mutant(
    name="sve-set-zeroes-tracer", base="upstream-6.14", source="5cbb61bf4168",
    catalogue=28, invariant="recoverability",
    description="sve_set_common() zeroes current's (the tracer's) saved V0-V31 instead of "
                "the tracee's: a tracer whose state was saved during its ptrace() call "
                "reloads zeroes on the way back to EL0",
    transform=_host(sve_set_zeroes_target=False), bounds="host-ptrace-sve"))
