"""Workloads: the knobs that say what runs, and how often things happen.

A workload is data. It builds the model configuration (CPUs, threads,
vCPUs) and carries the rates the random driver draws from. Every knob has a
name that ``kvmctx run`` accepts as an option and a sweep accepts as a grid
key (``guest_fp``, ``vl``...).

Rates are probabilities per *decision*: each simulator event picks a CPU at
random and decides what its current thread does next, and the rate of a
thing is the chance it is chosen when it is possible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from kvmctx.model.config import ModelConfig, TaskSpec, VcpuSpec

# Guest exit reasons: (name, ESR class name in traces, where it is handled).
# Handled "kernel": the run loop re-enters without returning to userspace.
EXIT_REASONS = {
    "wfx": ("WFx", "kernel"),          # WFI/WFE: the vCPU thread blocks (schedules out)
    "sys64": ("SYS64", "kernel"),      # trapped system register access, emulated in KVM
    "vgic": ("DABT_LOW", "kernel"),    # MMIO to the in-kernel vGIC distributor/redistributor
    "hvc": ("HVC64", "kernel"),        # PSCI and other hypercalls handled in KVM
    "irq": ("IRQ", "kernel"),          # a host interrupt arrived while in the guest
    "mmio": ("DABT_LOW", "user"),      # MMIO to a device emulated by the VMM (KVM_EXIT_MMIO)
}


@dataclass(frozen=True)
class HostTask:
    name: str
    sve: bool = False
    vl: int = 128
    kneon: bool = False    # does kernel-mode NEON in task context (e.g. crypto syscalls)
    fp: float = 0.6        # at EL0: chance a decision is an FP/SIMD write
    sve_use: float = 0.5   # of those, the chance it is an SVE write (SVE tasks)
    syscall: float = 0.2   # at EL0: chance a decision is a syscall
    cpu: int = 0
    sme: bool = False      # uses SME streaming mode and ZA (feature "sme")
    svl: int = 256         # its streaming vector length
    sme_use: float = 0.3   # of its FP writes, the chance it is an SME operation


@dataclass(frozen=True)
class Vcpu:
    name: str
    sve: bool = False
    vl: int = 128
    aarch32: bool = False
    cpu: int = 0


@dataclass(frozen=True)
class Workload:
    cpus: int = 2
    tasks: tuple[HostTask, ...] = ()
    vcpus: tuple[Vcpu, ...] = ()
    guest_fp: float = 0.33        # chance a guest run segment touches FP
    guest_sve: float = 0.0        # of those, the chance it uses SVE (SVE vCPUs)
    guest_fp_pattern: str = "bernoulli"   # or "bursty", "phased"
    burst: float = 0.8            # bursty: chance the next segment repeats this one's FP use
    phase_len: int = 200          # phased: segments per phase (FP-heavy, then FP-free)
    exit_mix: tuple[tuple[str, float], ...] = (
        ("wfx", 0.30), ("sys64", 0.20), ("vgic", 0.20), ("irq", 0.12), ("hvc", 0.06),
        ("mmio", 0.12),
    )
    softirq_neon: float = 0.02    # at a softirq-able point: chance a softirq uses NEON
    preempt: float = 0.03         # at a preemptible point: chance of an involuntary switch
    migrate: float = 0.005        # per event: chance a runnable thread moves CPU
    wake: float = 0.5             # idle CPU: chance it picks a runnable thread
    vmm_fp: float = 0.3           # VMM thread at EL0: chance it uses FP before KVM_RUN
    vmm_sve: float = 0.0          # of those uses, the chance it is SVE (QEMU's memmove on
                                  # an SVE host); > 0 makes the VMM threads SVE tasks (VL256)
    kneon_task: float = 0.3       # in a syscall of a kneon task: chance of kernel-mode NEON
    wfx_block: float = 0.9        # after a WFx exit: chance the vCPU thread blocks
    sysregs: str = ""             # "" (not modelled), eager, deferred, deferred-stale
    sysreg_write: float = 0.05    # with sysregs: chance a guest decision writes a sysreg
    vhe: bool = True              # VHE host (False: nVHE)
    # Host lifecycle events (signals, ptrace writes, execve, CPU PM and hotplug): per
    # decision of a host task at EL0 or an idle CPU, the chance that one happens.
    host_life: float = 0.0
    # Issue 15 (features vcpu-reset, one-reg, fpmr). vcpu_reset: at each run-loop top of
    # a vCPU thread, the chance another vCPU's PSCI CPU_ON (guest CPU hotplug, kexec) has
    # made a reset pending; one_reg: VMM thread at EL0, the chance its next ioctl is
    # KVM_SET_ONE_REG of an FP register rather than KVM_RUN (save/restore, migration);
    # fpmr: a host task's FP use, the chance it writes FPMR (FP8 code).
    vcpu_reset: float = 0.0
    one_reg: float = 0.0
    fpmr: float = 0.0
    # Issue 15 item 1 (features signals + sig-frames): per decision of a host task at EL0
    # (not a VMM thread) of that kind, the chance a signal is delivered to it or, in its
    # handler, that the handler returns (rt_sigreturn). Frames cost what their records
    # hold (kvmctx.model.feat.signals.frame_bytes).
    sig_fpsimd: float = 0.0
    sig_sve: float = 0.0
    sig_sme: float = 0.0
    # Issue 15 items 2-3 (features vl, fork). vl_change: a host SVE or SME task in a
    # syscall, the chance the syscall is prctl(PR_SVE_SET_VL / PR_SME_SET_VL) to its other
    # VL; churn: a host task in a syscall, the chance it is clone() (a free task slot
    # exists) or exit() (none does, and another host task lives): short-lived processes.
    vl_change: float = 0.0
    churn: float = 0.0
    # Feature vmm-respawn: a vCPU thread at EL0, the chance per decision that it exits
    # (a vCPU unplugged); a host task's next syscall creates its successor in the freed
    # slot, which runs the same vCPU.
    vcpu_respawn: float = 0.0
    notes: tuple[str, ...] = field(default=())

    def model_config(self, features: frozenset[str] | None = None,
                     vhe: bool | None = None) -> ModelConfig:
        tasks: list[TaskSpec] = []
        for t in self.tasks:
            tasks.append(TaskSpec(t.name, sve=t.sve, vl=t.vl, kneon=t.kneon, cpu=t.cpu % self.cpus,
                                  sme=t.sme, svl=t.svl))
        for i, v in enumerate(self.vcpus):
            tasks.append(TaskSpec(f"{v.name}-thread", vcpu=i, cpu=v.cpu % self.cpus,
                                  sve=self.vmm_sve > 0, vl=256 if self.vmm_sve > 0 else 128))
        vcpus = tuple(VcpuSpec(v.name, sve=v.sve, vl=v.vl, aarch32=v.aarch32) for v in self.vcpus)
        feats = features if features is not None else self.features()
        return ModelConfig(cpus=self.cpus, tasks=tuple(tasks), vcpus=vcpus,
                           features=frozenset(feats), vhe=self.vhe if vhe is None else vhe,
                           sysregs=self.sysregs or "eager")

    def features(self) -> frozenset[str]:
        f = {"preempt", "exit-user"}
        if self.softirq_neon > 0:
            f.add("softirq-neon")
        if any(t.kneon for t in self.tasks) and self.kneon_task > 0:
            f.add("kernel-neon")
        if self.migrate > 0 and self.cpus > 1:
            f.add("migration")
        if any(t.sve for t in self.tasks) or self.vmm_sve > 0:
            f.add("sve")
        if any(t.sme for t in self.tasks):
            f.add("sme")
        if any(v.sve for v in self.vcpus):
            f.add("guest-sve")
        if self.sysregs:
            f.add("sysregs")
        if self.vcpu_reset > 0:
            f.add("vcpu-reset")
        if self.one_reg > 0:
            f.add("one-reg")
        if self.fpmr > 0:
            f.add("fpmr")
        if self.sig_fpsimd > 0 or self.sig_sve > 0 or self.sig_sme > 0:
            f |= {"signals", "sig-frames"}
        if self.vl_change > 0 and (any(t.sve or t.sme for t in self.tasks)):
            f.add("vl")
        if self.churn > 0:
            f.add("fork")
        if self.vcpu_respawn > 0 and self.vcpus and self.tasks:
            f |= {"fork", "vmm-respawn"}
        if self.host_life > 0:
            f |= HOST_LIFE_FEATURES if self.cpus > 1 else HOST_LIFE_FEATURES - {"hotplug"}
        return frozenset(f)

    def exit_weights(self) -> tuple[list[str], list[float]]:
        names = [n for n, _ in self.exit_mix]
        weights = [w for _, w in self.exit_mix]
        return names, weights

    def with_knobs(self, **knobs: Any) -> Workload:
        """Apply user knobs (``guest_fp``, ``vl``, ``cpus``...) by name."""
        w = self
        kw: dict[str, Any] = {}
        for key, val in knobs.items():
            if val is None:
                continue
            if key == "vl":
                w = replace(w, tasks=tuple(replace(t, vl=val) if t.sve else t for t in w.tasks),
                            vcpus=tuple(replace(v, vl=val) if v.sve else v for v in w.vcpus))
            elif key == "svl":
                w = replace(w, tasks=tuple(replace(t, svl=val) if t.sme else t
                                           for t in w.tasks))
            elif key == "vcpus":
                base = w.vcpus[0] if w.vcpus else Vcpu("vcpu0")
                w = replace(w, vcpus=tuple(replace(base, name=f"vcpu{i}", cpu=i)
                                           for i in range(int(val))))
            elif key == "guest_aarch32":
                w = replace(w, vcpus=tuple(replace(v, aarch32=bool(val)) for v in w.vcpus))
            elif key == "guest_sve_vcpus":
                w = replace(w, vcpus=tuple(replace(v, sve=bool(val)) for v in w.vcpus))
            elif key == "exit_user":
                # Fraction of exits that go to the VMM: rescale the mix.
                kernel = [(n, x) for n, x in w.exit_mix if EXIT_REASONS[n][1] == "kernel"]
                tot = sum(x for _, x in kernel) or 1.0
                mix = [(n, x / tot * (1 - val)) for n, x in kernel] + [("mmio", float(val))]
                kw["exit_mix"] = tuple(mix)
            elif key in KNOB_FIELDS:
                kw[key] = val
            else:
                raise KeyError(key)
        return replace(w, **kw) if kw else w

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


HOST_LIFE_FEATURES = frozenset({"signals", "ptrace", "exec", "pm", "hotplug"})

KNOB_FIELDS = {f.name for f in fields(Workload)} - {"tasks", "vcpus", "notes"}

# Knobs a user can set by name (CLI options and sweep grid keys) and their types.
KNOBS: dict[str, type] = {
    "cpus": int, "guest_fp": float, "guest_sve": float, "guest_fp_pattern": str,
    "burst": float, "phase_len": int, "softirq_neon": float, "preempt": float,
    "migrate": float, "wake": float, "vmm_fp": float, "vmm_sve": float, "kneon_task": float,
    "wfx_block": float, "vl": int, "vcpus": int, "exit_user": float,
    "sysregs": str, "sysreg_write": float, "vhe": bool, "host_life": float, "svl": int,
    "guest_aarch32": bool, "vcpu_reset": float, "one_reg": float, "fpmr": float,
    "sig_fpsimd": float, "sig_sve": float, "sig_sme": float,
    "vl_change": float, "churn": float, "vcpu_respawn": float,
}


def validate_knob(name: str, value: Any) -> Any:
    """Check one knob value; raise ValueError with a one-line message."""
    if name not in KNOBS:
        raise ValueError(f"unknown workload knob {name!r}; valid: {', '.join(sorted(KNOBS))}")
    typ = KNOBS[name]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "vhe"):
            return True
        if str(value).lower() in ("0", "false", "no", "nvhe"):
            return False
        raise ValueError(f"knob {name}: {value!r} is not a boolean")
    if typ is int and isinstance(value, float) and not value.is_integer():
        # int(2.5) would quietly run a 2-CPU workload for a spec that asked for 2.5
        raise ValueError(f"knob {name}: {value!r} is not an integer")
    try:
        v = typ(value)
    except (TypeError, ValueError, OverflowError):   # OverflowError: int(inf)
        raise ValueError(f"knob {name}: {value!r} is not a valid {typ.__name__}") from None
    if typ is float and not 0.0 <= v <= 1.0:
        raise ValueError(f"knob {name}: {v} is not a probability in [0, 1]")
    if name == "cpus" and not 1 <= v <= 16:
        raise ValueError(f"knob cpus: {v} is not in 1..16")
    if name == "vcpus" and not 1 <= v <= 16:
        raise ValueError(f"knob vcpus: {v} is not in 1..16")
    if name == "vl" and (v % 128 or not 128 <= v <= 2048):
        raise ValueError(f"knob vl: {v} is not a multiple of 128 in 128..2048")
    if name == "svl" and v not in (128, 256, 512, 1024, 2048):
        raise ValueError(f"knob svl: {v} is not a power of two in 128..2048")
    if name == "phase_len" and v < 1:
        raise ValueError("knob phase_len: must be at least 1")
    if name == "sysregs" and v not in ("eager", "deferred", "deferred-stale"):
        raise ValueError(f"knob sysregs: {v!r} is not one of eager, deferred, deferred-stale")
    if name == "guest_fp_pattern" and v not in ("bernoulli", "bursty", "phased"):
        raise ValueError(f"knob guest_fp_pattern: {v!r} is not one of bernoulli, bursty, phased")
    return v
