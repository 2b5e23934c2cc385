"""What a model instance contains: CPUs, host threads, vCPUs, features.

The configuration is the *bounds* half of a spec (TLA+ style): the same
transition function runs over any configuration. It is plain data, built
once, never touched on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# Model features. The simulator turns them on through workload rates; the
# checker explores only the events of the features it was given.
FEATURES = (
    "sve",           # SVE host tasks: access traps, VL checks, syscall ABI discard
    "guest-sve",     # vCPUs with the SVE feature
    "sme",           # streaming mode, ZA (host tasks)
    "softirq-neon",  # kernel-mode NEON in softirq context
    "kernel-neon",   # kernel-mode NEON in task context (syscall)
    "preempt",       # involuntary context switches at preemptible points
    "migration",     # moving a runnable thread to another CPU
    "signals",       # signal delivery and sigreturn (frame save/restore)
    "ptrace",        # ptrace writes of a stopped task's FP state
    "exec",          # execve resets a task's FP state
    "hotplug",       # CPU offline/online (registers lost)
    "pm",            # CPU power-down/up (registers lost)
    "sysregs",       # deferred EL1 system registers (seed 001)
    "guest-vl",      # the guest programs a smaller SVE VL (ZCR_EL1)
    "exit-user",     # guest exits that return to the VMM's userspace
    "vfp-subarch",   # arm32 VFP subarchitecture: FPEXC.EX with FPINST/FPINST2 pending
    "vcpu-reset",    # PSCI CPU_ON resets a vCPU (KVM_REQ_VCPU_RESET in the run loop)
    "one-reg",       # KVM_SET_ONE_REG / KVM_GET_ONE_REG of FP and SVE registers
    "fpmr",          # FEAT_FPMR: FPMR saved/loaded with the FP state, tasks and guests
    "trap-window",   # EL0 SVE/SME access traps as preemptible kernel paths (el0_sve_acc)
    "ret-window",    # the return to EL0 and the syscall entry with their IRQs-on windows
    "isb",           # trap-control writes pending until an ISB/exception (host SMEN, VHE)
    "sme-regsets",   # ptrace of SME tasks: NT_ARM_SSVE/SVE mode switches, NT_ARM_ZA/ZT
    "sig-frames",    # signal frames for every task kind (SVE/SME/ZA/FPMR records, edits)
    "vl",            # per-task VLs: prctl(PR_SVE/SME_SET_VL), NT_ARM_SVE writes with another VL
    "fork",          # clone() into a free task slot (a dead task's), exit() releasing it
    "vmm-respawn",   # with fork: a vCPU thread exits and a new thread runs its vCPU
)

DEFAULT_VL = 128  # bits; FPSIMD-only contexts are modelled at VL128

# Seed 001: how EL1 and EL0 system registers are switched (feature "sysregs").
SYSREG_MODES = ("eager", "deferred", "deferred-stale")


@dataclass(frozen=True)
class TaskSpec:
    """A host thread. ``vcpu`` >= 0 makes it the VMM thread running that vCPU."""

    name: str
    sve: bool = False          # the task uses SVE at EL0
    vl: int = DEFAULT_VL       # its SVE vector length in bits
    sme: bool = False          # the task uses SME streaming mode / ZA
    svl: int = 256             # its streaming vector length in bits (SMCR.LEN), with sme
    kneon: bool = False        # it does kernel-mode NEON in task context (syscalls)
    vcpu: int = -1             # index of the vCPU this thread runs (KVM_RUN), or -1
    cpu: int = 0               # CPU whose runqueue it starts on


@dataclass(frozen=True)
class VcpuSpec:
    name: str
    sve: bool = False          # vCPU has the SVE feature (KVM_ARM_VCPU_SVE)
    vl: int = DEFAULT_VL       # its maximum VL (sve_max_vl)
    aarch32: bool = False      # 32-bit guest: FPEXC32_EL2 is part of its state


@dataclass(frozen=True)
class ModelConfig:
    cpus: int = 2
    tasks: tuple[TaskSpec, ...] = ()
    vcpus: tuple[VcpuSpec, ...] = ()
    features: frozenset[str] = field(default_factory=frozenset)
    vhe: bool = True           # VHE host (False: nVHE, the host kernel at EL1)
    sysregs: str = "eager"     # EL1/EL0 sysreg switching: eager, deferred, deferred-stale

    def __post_init__(self) -> None:
        if self.cpus < 1:
            raise ValueError("cpus must be at least 1")
        if self.sysregs not in SYSREG_MODES:
            raise ValueError(f"sysregs mode {self.sysregs!r}; valid: {', '.join(SYSREG_MODES)}")
        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ValueError(f"unknown feature(s): {', '.join(sorted(unknown))}; "
                             f"valid: {', '.join(FEATURES)}")
        for i, v in enumerate(self.vcpus):
            runners = [t for t in self.tasks if t.vcpu == i]
            if len(runners) != 1:
                raise ValueError(f"vCPU {v.name} needs exactly one VMM thread, has {len(runners)}")
        for t in self.tasks:
            if t.vcpu >= len(self.vcpus):
                raise ValueError(f"task {t.name} runs vCPU {t.vcpu}, which does not exist")
            if not 0 <= t.cpu < self.cpus:
                raise ValueError(f"task {t.name} starts on CPU {t.cpu}, which does not exist")
            if t.vl % 128 or not 128 <= t.vl <= 2048:
                raise ValueError(f"task {t.name}: VL {t.vl} is not a multiple of 128 in 128..2048")
            if t.svl not in (128, 256, 512, 1024, 2048):
                raise ValueError(f"task {t.name}: streaming VL {t.svl} is not a power of two "
                                 "in 128..2048")
        for v in self.vcpus:
            if v.vl % 128 or not 128 <= v.vl <= 2048:
                raise ValueError(f"vCPU {v.name}: VL {v.vl} is not a multiple of 128 in 128..2048")
        n_ctx = 2 * len(self.tasks) + len(self.vcpus) + 1
        if n_ctx > 62:
            raise ValueError("too many tasks and vCPUs for the tag encoding (at most 62 contexts)")

    def with_features(self, *names: str) -> ModelConfig:
        return replace(self, features=frozenset(self.features) | frozenset(names))

    def has(self, feature: str) -> bool:
        return feature in self.features
