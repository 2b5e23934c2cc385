"""Catalogue mutants of the host kernel's own lifecycle (bug-catalogue.md 1-16, 21).

Each expressed entry is upstream-6.14 with one host fix undone (a HostConfig
flag), checked at bounds that switch on the lifecycle feature it needs
(kvmctx.model.feat.host_life). Entries the model cannot express are in
``NOT_EXPRESSED`` with the reason.
"""

from __future__ import annotations

from kvmctx.catalogue.mutants import NOT_EXPRESSED, Mutant, _host, register
from kvmctx.engines.checker import Bounds, register_bounds

_BASE = frozenset({"preempt", "exit-user"})

register_bounds(Bounds(
    "host-pm", cpus=1, fpsimd_tasks=1, sve_tasks=0, vcpus=1, features=_BASE | {"pm"},
    budgets=(("pm", 1), ("switch", 2)),
    description="1 CPU, 1 FPSIMD task, a VMM with 1 vCPU, CPU power-down from idle"))
register_bounds(Bounds(
    "host-hotplug", cpus=2, fpsimd_tasks=1, sve_tasks=0, vcpus=1,
    features=_BASE | {"hotplug", "migration"},
    budgets=(("hotplug", 1), ("migration", 1), ("switch", 2)),
    description="2 CPUs, 1 FPSIMD task, a VMM with 1 vCPU, CPU offline/online, migration"))
register_bounds(Bounds(
    "host-exec", cpus=1, fpsimd_tasks=1, sve_tasks=0, vcpus=1, features=_BASE | {"exec"},
    budgets=(("exec", 1), ("switch", 2)),
    description="1 CPU, 1 FPSIMD task that may execve, a VMM with 1 vCPU"))
register_bounds(Bounds(
    "host-signals", cpus=1, fpsimd_tasks=1, sve_tasks=0, vcpus=1,
    features=_BASE | {"signals", "softirq-neon"},
    budgets=(("signal", 2), ("softirq", 1), ("switch", 2)),
    description="1 CPU, 1 FPSIMD task with one signal handler level, a VMM with 1 vCPU, "
                "softirq kernel-mode NEON"))
register_bounds(Bounds(
    "host-life", cpus=2, fpsimd_tasks=1, sve_tasks=1, vcpus=1,
    features=_BASE | {"sve", "signals", "ptrace", "exec", "pm", "hotplug"},
    budgets=(("exec", 1), ("hotplug", 1), ("pm", 1), ("ptrace", 1), ("signal", 2),
             ("switch", 2)),
    description="2 CPUs, an FPSIMD and an SVE task, a VMM with 1 vCPU; signals, ptrace "
                "(FPSIMD and SVE writes), execve, CPU PM and hotplug; at most 2 switch-outs, "
                "2 signal events, one of each other event"))

register_bounds(Bounds(
    "host-sme-kneon", cpus=1, fpsimd_tasks=1, sve_tasks=0, kneon_tasks=1, sme_tasks=1,
    vcpus=1, features=_BASE | {"sme", "kernel-neon"},
    budgets=(("switch", 3),),
    description="1 CPU, 1 FPSIMD task doing preemptible kernel-mode NEON in its syscalls, "
                "1 task using SME streaming mode and ZA, a VMM with 1 vCPU"))

register(Mutant(
    name="pm-keeps-binding", base="upstream-6.14", source="7c68a9cc0402", catalogue=1,
    invariant="integrity",
    description="CPU power-down does not invalidate fpsimd_last_state: a task switched "
                "back in after cpu_pm_exit skips its reload and reads garbage",
    transform=_host(pm_invalidates=False), bounds="host-pm"))
register(Mutant(
    name="hotplug-keeps-binding", base="upstream-6.14", source="32365e64a20e", catalogue=2,
    invariant="integrity",
    description="a dead CPU keeps its binding: a task that last ran there and migrates "
                "back after it comes online skips its reload",
    transform=_host(hotplug_invalidates=False), bounds="host-hotplug"))
register(Mutant(
    name="exec-cpu-zero", base="upstream-6.14", source="674c242c9323", catalogue=3,
    invariant="integrity",
    description="execve's memset leaves fpsimd_cpu = 0: preempted before returning to EL0 "
                "on CPU0, the new program skips the reload and sees the old program's "
                "registers",
    transform=_host(exec_flushes_task=False), bounds="host-exec"))
register(Mutant(
    name="sigreturn-skips-fpsimd", base="upstream-6.14", source="9de52a755cfb", catalogue=5,
    invariant="recoverability",
    description="rt_sigreturn copies the FPSIMD record into the task only for SVE tasks: "
                "an FPSIMD-only task resumes with the handler's values, not the frame's",
    transform=_host(sigreturn_copies_fpsimd=False), bounds="host-signals"))

register(Mutant(
    name="smstop-after-kernel-load", base="upstream-6.14", source="01098d893fa8",
    catalogue=15, invariant="integrity",
    description="switching to a task preempted inside kernel-mode NEON loads its kernel "
                "FPSIMD state and only then flushes the CPU: the flush's SMSTOP, with the "
                "previous task's streaming mode still on, zeroes what was just loaded",
    transform=_host(kernel_state_flush_first=False), bounds="host-sme-kneon"))

# (Entries 7-9, 11 and 12, the signal frames, are in kvmctx.catalogue.signals.)
NOT_EXPRESSED.update({
    6: "the copy of a whole kernel struct (with its cpu field) from a partly initialised "
       "stack temporary is memory corruption below the model's level: fields are "
       "assigned one by one",
})
