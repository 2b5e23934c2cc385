"""Event counters the transition function bumps as it goes.

Counters live outside the state (a plain list on the model), so the checker
can ignore them and the simulator can price them afterwards with a cost
profile. Index constants keep the hot path to ``ctr[X] += 1``.
"""

from __future__ import annotations

GUEST_FP_TRAPS = 0     # guest FP/SVE access trapped to the hypervisor
HOST_SVE_TRAPS = 1     # host EL0 SVE access trap (do_sve_acc)
SAVES = 2              # register-bank saves to memory (any context, any place)
RESTORES = 3           # register-bank loads from memory
BYTES_SAVED = 4
BYTES_RESTORED = 5
GUEST_EXITS = 6        # full exits from the guest to the host
EXITS_TO_USER = 7      # KVM_RUN returns to the VMM's userspace
VCPU_LOADS = 8
VCPU_PUTS = 9
CTX_SWITCHES = 10
SOFTIRQ_NEON = 11      # kernel-mode NEON sections in softirq context
TASK_NEON = 12         # kernel-mode NEON sections in task context
TRAP_WRITES = 13       # writes to CPTR_EL2 / CPACR_EL1 / HCPTR trap controls
ISBS = 14
SYSREG_SAVES = 15      # EL1/EL0 system registers saved (count of registers)
SYSREG_RESTORES = 16
SVE_SAVES = 17         # the subset of SAVES written in SVE format
SVE_RESTORES = 18
GUEST_FP_USES = 19     # run segments in which the guest touched FP
GUEST_ENTRIES = 20
SYSCALLS = 21
MIGRATIONS = 22
HOST_FP_USES = 23
SIGNALS = 24
SYSREG_TRAPS = 25      # emulated sysreg accesses (deferred-sysreg accessors)
EAGER_RESTORES = 26    # guest state restored before the guest asked (predictors)
EAGER_WASTED = 27      # ... and the guest then did not touch FP before exiting
HOST_SME_TRAPS = 28    # host EL0 SME access trap (do_sme_acc)
ZA_SAVES = 29          # the subset of SAVES that wrote ZA/ZT0 (SME)
ZA_RESTORES = 30
VCPU_RESETS = 31       # kvm_reset_vcpu() image resets (PSCI CPU_ON, KVM_SET_ONE_REG)
ONE_REG_WRITES = 32    # KVM_SET_ONE_REG writes of FP/SVE registers
FPMR_WRITES = 33       # FPMR writes at EL0 or in a guest (FEAT_FPMR)
SVE_TRAPS_IN_MEMORY = 34   # do_sve_acc found the state in memory (TIF_FOREIGN_FPSTATE set)
SME_TRAPS_IN_MEMORY = 35   # do_sme_acc likewise
SIGFRAME_BYTES = 36    # signal frame records written at delivery and read at sigreturn
VL_CHANGES = 37        # prctl(PR_SVE/SME_SET_VL) and ptrace VL changes (feature vl)
TASK_CLONES = 38       # clone() of a host task (feature fork)
TASK_EXITS = 39        # exit() of a host task
CLONE_BYTES = 40       # FP state bytes copied into children (arch_dup_task_struct)

N = 41

NAMES = (
    "guest_fp_traps", "host_sve_traps", "saves", "restores", "bytes_saved",
    "bytes_restored", "guest_exits", "exits_to_user", "vcpu_loads", "vcpu_puts",
    "context_switches", "softirq_neon", "task_neon", "trap_writes", "isbs",
    "sysreg_saves", "sysreg_restores", "sve_saves", "sve_restores", "guest_fp_uses",
    "guest_entries", "syscalls", "migrations", "host_fp_uses", "signals",
    "sysreg_traps", "eager_restores", "eager_wasted", "host_sme_traps", "za_saves",
    "za_restores", "vcpu_resets", "one_reg_writes", "fpmr_writes", "sve_traps_in_memory",
    "sme_traps_in_memory", "sigframe_bytes", "vl_changes", "task_clones", "task_exits",
    "clone_bytes",
)
assert len(NAMES) == N


def new() -> list[int]:
    return [0] * N


def as_dict(ctr: list[int]) -> dict[str, int]:
    return dict(zip(NAMES, ctr, strict=True))
