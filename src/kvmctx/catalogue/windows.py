"""Mutants of the host windows issue 14 opened: upstream-6.14 with one later fix undone.

Each needs the windows the model now has (feature ``trap-window``: the EL0
SVE/SME access traps as preemptible kernel paths) and is checked at the small
bounds that move a task between CPUs inside them. upstream-6.14 stands for
v6.14 with these fixes, as its stable series has them (docs/policies.md).
"""

from __future__ import annotations

from kvmctx.catalogue.mutants import Mutant, _host, register
from kvmctx.engines.checker import Bounds, register_bounds

register(Mutant(
    name="sve-trap-stale-binding", base="upstream-6.14", source="751ecf6afd65", catalogue=None,
    invariant="no-bug",
    description="do_sve_acc() finds the state in memory (the task was preempted and "
                "migrated inside the trap), converts the image to SVE but leaves "
                "fpsimd_cpu: migrated back, the task reuses the pre-trap registers with "
                "TIF_SVE set and the CPU's VL never set for it (CVE-2024-50275)",
    transform=_host(sve_trap_flushes_task=False), bounds="sve-migration"))
register(Mutant(
    name="sme-trap-stale-binding", base="upstream-6.14", source="d3eaab3c7090",
    catalogue=None, invariant="no-bug",
    description="do_sme_acc() with the state in memory sets TIF_SME but leaves "
                "fpsimd_cpu: migrated back, the task reuses its old binding with SMEN "
                "still off and traps again",
    transform=_host(sme_trap_flushes_task=False), bounds="sme-migration"))

register_bounds(Bounds(
    "host-syscall-stop", cpus=1, fpsimd_tasks=0, sve_tasks=1, vcpus=0,
    features=frozenset({"sve", "ptrace", "softirq-neon", "preempt", "ret-window"}),
    budgets=(("ptrace", 1), ("softirq", 1), ("switch", 2)),
    description="1 CPU, 1 SVE task, no vCPU; ptrace writes at syscall stops, softirq "
                "kernel-mode NEON, preemption; the return to EL0 and the syscall entry "
                "with their IRQs-on windows (ret-window)"))

register(Mutant(
    name="syscallno-discard", base="upstream-6.14", source="398edaa12f9c", catalogue=10,
    invariant="recoverability",
    description="fpsimd_save_user_state() drops the SVE state whenever in_syscall(): a "
                "debugger's NT_ARM_SVE write at a syscall stop is reloaded on the way out, "
                "then a softirq in exit_to_user_mode()'s IRQs-on window saves only the "
                "FPSIMD view (syscallno is still set) and the written upper bits are lost",
    transform=_host(syscall_discard_by_to_save=False), bounds="host-syscall-stop"))

register(Mutant(
    name="kernel-switch-no-flush", base="upstream-6.14", source="e92bee9f861b",
    catalogue=None, invariant="confidentiality",
    description="v6.8's switch to a task inside kernel-mode NEON loads its kernel state "
                "(lazily, 2632e2521769) without flushing the CPU: the previous task's user "
                "binding still claims the registers, so it skips its reload and runs with "
                "the other task's kernel-mode NEON values (the dm-crypt corruption)",
    transform=_host(kernel_state_flush_first=False, kernel_switch_flushes=False),
    bounds="kneon-nested"))
