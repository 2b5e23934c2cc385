"""Mutants of issue 15 items 7 and 5: trap-control writes pending an ISB, SME regsets.

Each is upstream-6.14 with one public fix undone, checked at the small bounds
that reach it (registered here too).
"""

from __future__ import annotations

from kvmctx.catalogue.mutants import Mutant, _host, register
from kvmctx.engines.checker import Bounds, register_bounds
from kvmctx.model.feat.isb import with_put_restore_smen

_ISB_FEATURES = frozenset({"sme", "isb", "preempt", "exit-user"})

register_bounds(Bounds(
    "kvm-sme-isb", cpus=1, fpsimd_tasks=0, sve_tasks=0, sme_tasks=1, vcpus=1,
    features=_ISB_FEATURES, budgets=(("switch", 2),),
    description="VHE, 1 CPU, 1 SME task, a VMM with 1 vCPU, preemption; the host's SME "
                "trap control pending until an ISB or exception (feature isb)"))
register_bounds(Bounds(
    "kvm-sme-isb-softirq", cpus=1, fpsimd_tasks=0, sve_tasks=0, sme_tasks=1, vcpus=1,
    features=_ISB_FEATURES | {"softirq-neon"}, budgets=(("softirq", 1), ("switch", 2)),
    description="kvm-sme-isb plus softirq kernel-mode NEON (one)"))


def _put_smen(**flags):
    host = _host(**flags)
    return lambda p: with_put_restore_smen(host(p))


register(Mutant(
    name="smen-put-no-isb", base="upstream-6.14", source="59d78a2ec0e9", catalogue=21,
    invariant="no-bug",
    description="v6.1's VHE kvm_arch_vcpu_put_fp(): the hyp exit left host SME trapped, "
                "the put re-enables CPACR_EL1.SMEN and, with no ISB, the save that follows "
                "reads SVCR under the old setting: an SME trap in the kernel (panic)",
    transform=_put_smen(hyp_exit_enables_host_sme=False, put_syncs_smen=False),
    bounds="kvm-sme-isb"))
register(Mutant(
    name="smen-exit-trapped", base="upstream-6.14", source="375110ab51de", catalogue=36,
    invariant="no-bug",
    description="v5.19..v6.4 VHE: the hyp exit sets CPTR_EL2.SMEN to 0b00 and only "
                "kvm_arch_vcpu_put_fp() re-enables it (with its ISB): a softirq's "
                "kernel-mode NEON between the exit and the put saves or SMSTOPs with host "
                "SME trapped (407a99c4654e's account)",
    transform=_put_smen(hyp_exit_enables_host_sme=False),
    bounds="kvm-sme-isb-softirq"))


# ---------------------------------------------------------------- SME regsets

register_bounds(Bounds(
    "host-ptrace-sme", cpus=1, fpsimd_tasks=0, sve_tasks=0, sme_tasks=1, vcpus=0, sme_sve=True,
    features=frozenset({"sme", "sve", "ptrace", "sme-regsets", "preempt", "softirq-neon",
                        "trap-window"}),
    budgets=(("ptrace", 2), ("softirq", 1), ("switch", 1)),
    description="1 CPU, 1 SME task (also using SVE), no vCPU; two debugger writes "
                "(NT_PRFPREG, NT_ARM_SVE/SSVE/ZA/ZT: sme-regsets), softirq kernel-mode "
                "NEON, the SME access trap as a preemptible path (trap-window)"))

register(Mutant(
    name="ssve-write-keeps-tif-sme-clear", base="upstream-6.14", source="5d0a8d2fba50",
    catalogue=37, invariant="no-bug",
    description="an NT_ARM_SSVE write puts a task that never used SME into streaming mode "
                "without TIF_SME: the reload never programs its streaming VL, so the next "
                "save finds the live SVL wrong (WARN, SIGKILL, state not saved)",
    transform=_host(ssve_write_sets_tif_sme=False), bounds="host-ptrace-sme"))
register(Mutant(
    name="zt-write-keeps-tif-sme-clear", base="upstream-6.14", source="2f43f549cd0b",
    catalogue=38, invariant="recoverability",
    description="an NT_ARM_ZT write turns ZA on without TIF_SME: the task's first SME use "
                "traps, do_sme_acc()'s sme_alloc(current, true) zeroes the saved ZA/ZT0 "
                "and the reload brings zeroes instead of the debugger's ZT0",
    transform=_host(zt_write_sets_tif_sme=False), bounds="host-ptrace-sme"))
