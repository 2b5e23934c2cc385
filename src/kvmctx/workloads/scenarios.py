"""Named scenarios: workloads users recognise, each with where its numbers come from.

Sources are the project's reference notes (shared/reference/costs.md and
peer-tests.md) and the seeds; where a number is a choice rather than a
measurement, the paragraph says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmctx.workloads.workload import HostTask, Vcpu, Workload


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    source: str
    description: str
    workload: Workload


def _two_vcpus(sve: bool = False, vl: int = 128) -> tuple[Vcpu, ...]:
    return (Vcpu("vcpu0", sve=sve, vl=vl, cpu=0), Vcpu("vcpu1", sve=sve, vl=vl, cpu=1))


SCENARIOS: dict[str, Scenario] = {}


def _add(sc: Scenario) -> None:
    SCENARIOS[sc.name] = sc


_add(Scenario(
    name="default",
    summary="2 CPUs, a VMM with 2 vCPUs (guest FP in ~1/3 of runs), an FPSIMD and an SVE "
            "(VL256) host task, softirq NEON, preemption, migration; most exits in-kernel",
    source="seed 002 (29% of runs touch FP); costs.md exit mixes",
    description=(
        "The embedded default. Two CPUs shared by a VMM running two vCPUs and two host "
        "tasks, one using FPSIMD and one using SVE at VL 256. Guests touch FP in about a "
        "third of their run segments (seed 002: 29% of returns to userspace or preemptions "
        "found the vCPU had touched FPSIMD). Most exits are handled in the kernel (WFx, "
        "SYS64, vGIC MMIO, IRQ, HVC); 12% are MMIO to a device model in the VMM. Softirqs "
        "use kernel-mode NEON now and then (as dm-crypt or IPsec would), and threads are "
        "preempted and migrated."),
    workload=Workload(
        cpus=2,
        tasks=(HostTask("host-fpsimd", cpu=0), HostTask("host-sve", sve=True, vl=256, cpu=1)),
        vcpus=_two_vcpus(),
        guest_fp=0.33,
    ),
))

_add(Scenario(
    name="idle-guest",
    summary="mostly WFx exits (an idle guest): ~94% WFx, ~5% SYS64; guests rarely use FP",
    source="costs.md: perf kvm stat on arm64, idle guest ~94% WFx, ~5% SYS64",
    description=(
        "An idle guest: the vCPUs sleep in WFI and wake for timer interrupts. perf kvm stat "
        "on arm64 shows about 94% WFx and 5% SYS64 exits for such guests. Every WFx blocks "
        "the vCPU thread, so vcpu_put/vcpu_load happen at nearly every exit: this is where "
        "a design that saves state at vcpu_load pays most. Guest FP use is low (5%, a "
        "choice: idle kernels touch FP only in the occasional crypto or memcpy path)."),
    workload=Workload(
        cpus=2, tasks=(HostTask("host-fpsimd", cpu=0, fp=0.3),),
        vcpus=_two_vcpus(), guest_fp=0.05,
        exit_mix=(("wfx", 0.94), ("sys64", 0.05), ("mmio", 0.01)),
        softirq_neon=0.01, preempt=0.01, wfx_block=0.95,
    ),
))

_add(Scenario(
    name="mmio-heavy",
    summary="device emulation: ~99% DABT_LOW exits, most to the VMM's userspace",
    source="costs.md: MMIO-heavy guest ~99% DABT_LOW at tens of thousands of exits/s",
    description=(
        "A guest driving an emulated device: nearly every exit is a data abort on an MMIO "
        "address (DABT_LOW, ~99% per costs.md). Here 70% of exits go to the VMM's device "
        "model (KVM_EXIT_MMIO) and the rest hit the in-kernel vGIC. Every return to the "
        "VMM runs vcpu_put and the VMM's own ret_to_user, so designs that keep guest state "
        "live across exits gain nothing and eager-at-load designs pay every time. Guest FP "
        "use is the seed 002 figure (29%)."),
    workload=Workload(
        cpus=2, tasks=(HostTask("host-fpsimd", cpu=0),), vcpus=_two_vcpus(), guest_fp=0.29,
        exit_mix=(("mmio", 0.70), ("vgic", 0.29), ("irq", 0.01)), vmm_fp=0.5,
    ),
))

_add(Scenario(
    name="hpc-sve",
    summary="SVE guests (VL512) computing with few exits; FP in most runs",
    source="choice: an HPC guest; VL512 as on A64FX-class parts; exit mix from costs.md",
    description=(
        "Two SVE vCPUs at VL 512 running numeric code: nearly every run segment uses SVE "
        "(90%), exits are rare and mostly timer IRQs and SYS64. The SVE state is 2,184 "
        "bytes per save at VL512 (protocol.md), so every avoidable save or restore is "
        "four times an FPSIMD one. A host SVE task at the same VL shares the CPUs."),
    workload=Workload(
        cpus=2, tasks=(HostTask("host-sve", sve=True, vl=512, cpu=0),),
        vcpus=_two_vcpus(sve=True, vl=512), guest_fp=0.9, guest_sve=0.9,
        exit_mix=(("irq", 0.6), ("sys64", 0.25), ("wfx", 0.1), ("mmio", 0.05)),
        softirq_neon=0.01, preempt=0.02,
    ),
))

_add(Scenario(
    name="crypto-host",
    summary="softirq NEON heavy (dm-crypt, IPsec) next to an FP-using guest",
    source="choice: kernel-mode NEON in softirq as dm-crypt/IPsec do; guest FP seed 002",
    description=(
        "A host doing disk and network encryption in softirq context (dm-crypt, IPsec): "
        "kernel-mode NEON lands in every softirq-able gap with 25% probability. Every such "
        "use saves whatever user or guest state is live and leaves the registers foreign, "
        "so lazily-kept guest state is evicted often. A host task also does kernel-mode "
        "NEON in task context (crypto syscalls)."),
    workload=Workload(
        cpus=2, tasks=(HostTask("host-crypto", kneon=True, cpu=0, syscall=0.4),),
        vcpus=_two_vcpus(), guest_fp=0.29, softirq_neon=0.25, kneon_task=0.6,
    ),
))

_add(Scenario(
    name="fp-stress",
    summary="the kselftest fp-stress mix: per-CPU FPSIMD + kernel NEON, SVE per VL, SME "
            "(streaming SVE + ZA), testers forked, VL-set and exiting all the time; no guest",
    source="peer-tests.md: tools/testing/selftests/arm64/fp fp-stress (and vec-syscfg for "
           "VL inheritance across fork); churn and VL-change rates: assumption",
    description=(
        "What fp-stress runs, per CPU: an FPSIMD tester, a kernel-mode NEON user, one "
        "SVE tester per vector length (here VL128 and VL256) and, on SME systems, a "
        "streaming-SVE and ZA tester per streaming VL (here SVL256), all at once, with "
        "frequent context switches (sched_yield) and syscalls, and a SIGUSR1 irritator "
        "signalling every tester (delivery and rt_sigreturn with FPSIMD, SVE, streaming-SVE "
        "and ZA frames: knobs sig_fpsimd, sig_sve, sig_sme). No guest: this checks and "
        "prices the host machinery every design stands on. Designs without SME run the "
        "SME tester as a plain FPSIMD task (the output says so). fp-stress starts every "
        "tester as a child process (fork, then the VL set with prctl before the tester "
        "runs); here the testers churn all the time: 2% of their syscalls are exit() or "
        "clone() of a new tester into the freed task slot (the dead one's task_struct, "
        "of whatever FP kind that slot is), and 2% of an SVE or SME tester's syscalls "
        "switch its VL (prctl PR_SVE_SET_VL / PR_SME_SET_VL). Knobs churn and vl_change "
        "(0 turns them off)."),
    workload=Workload(
        cpus=2,
        tasks=(HostTask("fpsimd-test0", cpu=0, fp=0.8), HostTask("fpsimd-test1", cpu=1, fp=0.8),
               HostTask("kneon-test", kneon=True, cpu=0, syscall=0.5),
               HostTask("sve-test-128", sve=True, vl=128, cpu=1, sve_use=0.8),
               HostTask("sve-test-256", sve=True, vl=256, cpu=0, sve_use=0.8),
               HostTask("za-test-256", sme=True, svl=256, cpu=1, sme_use=0.8)),
        vcpus=(), guest_fp=0.0, preempt=0.15, softirq_neon=0.05, kneon_task=0.8,
        sig_fpsimd=0.02, sig_sve=0.02, sig_sme=0.02,
        churn=0.02, vl_change=0.02,
    ),
))

_add(Scenario(
    name="sme-host",
    summary="a host task in SME streaming mode with ZA (SVL512) beside a VMM with 2 vCPUs",
    source="protocol.md section 1 (ZA is (SVL/8)^2 bytes: 4 KiB at SVL512, ZT0 64 B); "
           "choice: one matrix worker per host",
    description=(
        "A host running an SME matrix kernel (streaming SVE and ZA at SVL 512: 4,096 B of "
        "ZA plus 64 B of ZT0 and 2,176 B of streaming Z/P/FFR) on CPU0 next to a VMM with "
        "two vCPUs whose guests use FP in a third of their runs. Every vcpu_load that "
        "finds the matrix worker's state live must save it (v6.14 saves and flushes "
        "unconditionally, which also leaves streaming mode); a syscall takes the worker "
        "out of streaming mode but keeps ZA. This prices SME's state size against the "
        "KVM designs that can run on an SME host."),
    workload=Workload(
        cpus=2,
        tasks=(HostTask("sme-matrix", sme=True, svl=512, cpu=0, fp=0.7, sme_use=0.7),),
        vcpus=_two_vcpus(),
        guest_fp=0.33,
    ),
))

_add(Scenario(
    name="kvm-stress",
    summary="host sve-stress on all CPUs + two guests running fp-stress, migrating VMM threads",
    source="peer-tests.md: the stress recipe the kernel's own docs use for KVM",
    description=(
        "The kernel docs' KVM stress recipe: sve-stress on every host CPU and two guests "
        "each running fp-stress (every run segment uses FP), with the VMM threads migrating "
        "between CPUs. Any corruption is reported as a violation."),
    workload=Workload(
        cpus=2,
        tasks=(HostTask("sve-stress0", sve=True, vl=256, cpu=0, sve_use=0.9),
               HostTask("sve-stress1", sve=True, vl=256, cpu=1, sve_use=0.9)),
        vcpus=(Vcpu("guest0", sve=True, vl=256, cpu=0), Vcpu("guest1", sve=True, vl=256, cpu=1)),
        guest_fp=1.0, guest_sve=0.5, migrate=0.05, preempt=0.08, softirq_neon=0.03,
    ),
))

_add(Scenario(
    name="vcpu-lifecycle",
    summary="guests that reset vCPUs (PSCI CPU_ON) and a VMM that saves/restores FP "
            "registers with KVM_SET_ONE_REG; an FP8 host task writing FPMR",
    source="issue 15 (items 4, 6); rates are choices, costs from costs.md where it has them",
    description=(
        "Two SVE vCPUs whose guests bring CPUs up and down: at 2% of run-loop tops a PSCI "
        "CPU_ON reset is pending and kvm_reset_vcpu() puts, resets and reloads the vCPU "
        "in the run loop; the VMM writes an FP register with KVM_SET_ONE_REG before 5% of "
        "its KVM_RUN calls (save/restore, migration); a host task writes FPMR in 20% of "
        "its FP uses (FP8 code). The resets are priced through the saves and restores "
        "their put and load cause (the FP save/restore figures of costs.md); the PSCI "
        "call, the image memset and the ONE_REG ioctl have no figure in costs.md and are "
        "counted (vcpu_resets, one_reg_writes, fpmr_writes), not priced. Designs older "
        "than v6.9 run it without FPMR."),
    workload=Workload(
        cpus=2,
        tasks=(HostTask("fp8-task", cpu=0, fp=0.6),),
        vcpus=_two_vcpus(sve=True, vl=256), guest_fp=0.5, guest_sve=0.5,
        vcpu_reset=0.02, one_reg=0.05, fpmr=0.2,
    ),
))

_add(Scenario(
    name="overcommit",
    summary="more vCPUs than CPUs: 4 vCPUs on 2 CPUs, frequent preemption",
    source="choice: 2x overcommit",
    description=(
        "Four vCPUs on two CPUs: the vCPU threads preempt each other at loop tops and on "
        "WFx, so vcpu_put/vcpu_load run at most switches and guest state lingers in "
        "registers only briefly."),
    workload=Workload(
        cpus=2, tasks=(HostTask("host-fpsimd", cpu=0),),
        vcpus=tuple(Vcpu(f"vcpu{i}", cpu=i % 2) for i in range(4)), guest_fp=0.33,
        preempt=0.1,
    ),
))


def get(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(name) from None
