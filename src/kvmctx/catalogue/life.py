"""Mutants of a task's VL changes, clone() and exit() (issue 15 items 2 and 3).

upstream-6.14 with one later fix undone (HostConfig flags), checked at the
small host bounds that turn on features ``vl`` and ``fork``
(kvmctx.model.feat.task_life). Catalogue numbers 32-34 continue
bug-catalogue.md; docs/checker-catalogue-host.md has the interleavings.
"""

from __future__ import annotations

from kvmctx.catalogue.mutants import Mutant, _host, register
from kvmctx.engines.checker import Bounds, register_bounds

register_bounds(Bounds(
    "host-vl", cpus=1, fpsimd_tasks=0, sve_tasks=1, vcpus=0,
    features=frozenset({"sve", "vl", "preempt", "ptrace"}),
    budgets=(("ptrace", 1), ("switch", 2), ("vl", 1)),
    description="1 CPU, 1 SVE task (VL256) that may switch to VL512 with prctl(PR_SVE_SET_VL) "
                "or have a debugger write NT_ARM_SVE at the other VL; preemption"))
register_bounds(Bounds(
    "host-vl-sme", cpus=1, fpsimd_tasks=0, sve_tasks=0, sme_tasks=1, sme_sve=True, vcpus=0,
    features=frozenset({"sve", "sme", "vl", "preempt"}),
    budgets=(("switch", 2), ("vl", 2)),
    description="1 CPU, 1 task using SVE (VL512) and SME (SVL256, ZA) that may change either "
                "VL with prctl(PR_SVE_SET_VL / PR_SME_SET_VL); it may block in the kernel"))
register_bounds(Bounds(
    "host-fork", cpus=1, fpsimd_tasks=1, sve_tasks=1, vcpus=0,
    features=frozenset({"sve", "fork", "preempt", "ptrace"}),
    budgets=(("clone", 1), ("exit", 1), ("ptrace", 1), ("switch", 2)),
    description="1 CPU, an FPSIMD and an SVE task that may exit() and clone() a thread into "
                "the freed task slot (the dead task's task_struct), ptrace writes at stops"))

register_bounds(Bounds(
    "host-fork-reuse", cpus=1, fpsimd_tasks=2, sve_tasks=0, vcpus=0,
    features=frozenset({"fork", "preempt"}),
    budgets=(("clone", 1), ("exit", 1), ("switch", 2)),
    description="1 CPU, 2 FPSIMD tasks; one may exit() and the other clone() a thread into "
                "its slot (task_struct reuse); no ptrace, so a clone copies current state"))
register_bounds(Bounds(
    "host-churn", cpus=2, fpsimd_tasks=1, sve_tasks=1, vcpus=1,
    features=frozenset({"sve", "vl", "fork", "ptrace", "preempt", "migration", "exit-user"}),
    budgets=(("clone", 1), ("exit", 1), ("migration", 1), ("ptrace", 1), ("switch", 2),
             ("vl", 1)),
    description="2 CPUs, an FPSIMD and an SVE task, a VMM with 1 vCPU; VL changes (prctl, "
                "ptrace), exit() and clone() into the freed slot, ptrace writes, migration: "
                "the seed designs' re-check of issue 15 items 2-3"))

register_bounds(Bounds(
    "kvm-vmm-respawn", cpus=2, fpsimd_tasks=1, sve_tasks=0, vcpus=1,
    features=frozenset({"fork", "vmm-respawn", "preempt", "migration", "softirq-neon",
                        "exit-user"}),
    budgets=(("clone", 1), ("exit", 1), ("migration", 1), ("softirq", 1), ("switch", 2)),
    description="2 CPUs, an FPSIMD task and a VMM with 1 vCPU whose thread may exit() "
                "outside KVM_RUN; the task clone()s a new thread into the freed slot (the "
                "same task_struct) that runs the same vCPU; softirq NEON, migration"))
register_bounds(Bounds(
    "host-fork-sme", cpus=1, fpsimd_tasks=0, sve_tasks=0, sme_tasks=2, vcpus=0,
    features=frozenset({"sme", "fork", "ptrace", "sme-regsets", "preempt"}),
    budgets=(("clone", 1), ("exit", 1), ("ptrace", 1), ("switch", 2)),
    description="1 CPU, 2 SME tasks; one may exit(), a debugger's NT_ARM_SSVE write at a "
                "syscall stop puts the other in streaming mode inside clone() (a thread "
                "into the freed slot)"))
register_bounds(Bounds(
    "host-vl-ssve", cpus=1, fpsimd_tasks=0, sve_tasks=0, sme_tasks=2, sme_sve=True, vcpus=0,
    features=frozenset({"sve", "sme", "vl", "ptrace", "sme-regsets", "preempt"}),
    budgets=(("ptrace", 1), ("switch", 2), ("vl", 1)),
    description="1 CPU, 2 SME tasks (also using SVE); a debugger's NT_ARM_SSVE write at a "
                "syscall stop, then a VL change (prctl PR_SVE/SME_SET_VL, NT_ARM_SVE at "
                "another VL) of the task in streaming mode"))

register(Mutant(
    name="clone-dead-binding", base="upstream-6.14", source="071b6d4a5d34", catalogue=32,
    invariant="integrity",
    description="v6.14's clone path (fpsimd_preserve_current_state(), no invalidation of the "
                "parent's binding: before e0cb0f26594c) without copy_thread()'s "
                "fpsimd_flush_task_state(): a child given a dead task's task_struct "
                "inherits its parent's fpsimd_cpu, the CPU's binding still names the dead "
                "task, and the child returns to EL0 with the dead task's registers",
    transform=_host(clone_flushes_task=False, clone_syncs_effective=False),
    bounds="host-fork-reuse"))
register(Mutant(
    name="clone-stale-fpsimd", base="upstream-6.14", source="e0cb0f26594c", catalogue=33,
    invariant="integrity",
    description="arch_dup_task_struct() copies thread.uw.fpsimd_state as it is: after a "
                "debugger's NT_ARM_SVE write at a syscall stop the task's V0-V31 live in its "
                "SVE image, and the child of its clone() starts from the stale FPSIMD image",
    transform=_host(clone_syncs_effective=False), bounds="host-fork"))
register(Mutant(
    name="vl-change-stale", base="upstream-6.14", source="49ce484187f7", catalogue=34,
    invariant="recoverability",
    description="prctl(PR_SVE_SET_VL) converts with sve_to_fpsimd() because TIF_SVE is set, "
                "but inside the syscall the state was saved in FPSIMD form: the stale SVE "
                "image overwrites the task's V0-V31 (its latest values are lost)",
    transform=_host(vl_change_syncs_effective=False), bounds="host-vl"))
register(Mutant(
    name="clone-keeps-sm", base="upstream-6.14", source="a6d066f70574", catalogue=39,
    invariant="recoverability",
    description="arch_dup_task_struct() without task_smstop_sm(dst): the child of a parent "
                "put in streaming mode by NT_ARM_SSVE at its clone() syscall stop inherits "
                "PSTATE.SM (fp_type FPSIMD, no sve_state, TIF_SME clear), while the SME ABI "
                "gives a new thread SM = 0: the child's SVCR is nowhere, and it would "
                "return to EL0 in streaming mode with nowhere to save it",
    transform=_host(clone_clears_sm=False), bounds="host-fork-sme"))
register(Mutant(
    name="vl-change-fpsimd-streaming", base="upstream-6.14", source="b87c8c4aca11",
    catalogue=40, invariant="confidentiality",
    description="prctl(PR_SVE_SET_VL) converts a task to FPSIMD form (fp_type FPSIMD, "
                "TIF_SVE clear) but leaves PSTATE.SM set: reloaded on a CPU still in "
                "streaming mode, the SVCR write changes nothing and the FPSIMD load leaves "
                "P/FFR of the previous streaming task live",
    transform=_host(vl_change_keeps_mode=False), bounds="host-vl-ssve"))
