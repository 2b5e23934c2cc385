"""Replaying a real trace through the model.

The trace decides *when* things happen: which thread each CPU runs
(sched_switch), when each vCPU enters and leaves the guest (kvm_entry,
kvm_exit), which exits go out to the VMM (kvm_userspace_exit), which vCPU
threads move (sched_migrate_task), and when softirqs run (softirq_entry).
What a trace cannot show is drawn from the workload's knobs, with the seed,
and printed as an assumption:

* guest FP use per run segment (``guest_fp``, ``guest_fp_pattern``...),
  exactly as ``kvmctx run`` draws it;
* whether a softirq uses kernel-mode NEON (``softirq_neon`` becomes the
  chance per real softirq_entry);
* the FP use of host threads. Every thread that is neither a vCPU thread
  nor idle is folded into one model task per CPU ("host work on CPU k"),
  which takes the rates of the scenario's host tasks (in order, cycling);
  each time one is switched in it makes one decision (FP use, syscall with
  kernel-mode NEON, or none) from those rates;
* the VMM thread's own FP use on a return to userspace (``vmm_fp``).

Mapping onto the model's flow (kvmctx.model.flow): a kvm_entry drives the
vCPU thread from wherever it is to the guest (KVM_RUN, vcpu_load, the run
loop top where the segment's FP use is drawn, the entry steps); a kvm_exit
uses the guest's FP first if its segment does and then exits with the class
the trace shows (to the VMM if a kvm_userspace_exit follows before the next
entry); a sched_switch brings the current thread to a point where the
kernel can switch (a vCPU in the guest exits first) and switches.

Real traces contradict themselves (lost events, tasks that started before
the trace, truncated ends). Whatever an event needs that the model's state
does not give (a thread running on another CPU, a vCPU that entered without
a recorded switch) is repaired with the least set of model actions and
counted under ``repairs``; nothing is silently dropped.

Hook-internal gaps: the trace's granularity is coarser than a hook's steps,
so softirqs land at the rest point where their softirq_entry falls; the
random in-gap softirqs of ``kvmctx run`` are off here.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from typing import Any

from kvmctx.engines.simulator import SimResult, Simulator
from kvmctx.io import trace as T
from kvmctx.model import counters as C
from kvmctx.model.flow import EXIT_KERNEL, EXIT_USER, K_GUEST, K_IDLE, K_USER
from kvmctx.model.machine import (
    GEXIT,
    GFP,
    GSVE,
    KNEON,
    KVMRUN,
    MIGRATE,
    SCHED,
    SIRQ,
    STEP,
    SYSCALL,
    UFP,
    USVE,
    Model,
)
from kvmctx.workloads.workload import HostTask, Vcpu, Workload

MAX_DRIVE_STEPS = 64
MAX_TRACE_CPUS = 64
MAX_TRACE_VCPUS = 64

# ESR exception class (kvm_exit) -> the workload's exit-reason names.
EC_REASON = {0x01: "wfx", 0x18: "sys64", 0x16: "hvc", 0x12: "hvc", 0x17: "hvc", 0x13: "hvc",
             0x24: "mmio", 0x20: "mmio"}


class TraceReplayError(ValueError):
    """The trace cannot be run (no vCPU, too many CPUs...): one line."""


def trace_workload(tw: T.TraceWorkload, base: Workload) -> Workload:
    """The model's cast for a trace: its CPUs, one task per vCPU thread, one
    host task per CPU, rates and VLs from ``base`` (a scenario plus knobs)."""
    ncpu = max(1, tw.n_cpus)
    vth = tw.vcpu_threads()
    if not vth:
        raise TraceReplayError(f"{tw.source}: no vCPU thread in the trace (no kvm_entry, "
                               "kvm_exit or kvm_userspace_exit event); record with -e kvm:*")
    if ncpu > MAX_TRACE_CPUS:
        raise TraceReplayError(f"{tw.source}: {ncpu} CPUs; the replay models at most "
                               f"{MAX_TRACE_CPUS}")
    if len(vth) > MAX_TRACE_VCPUS:
        raise TraceReplayError(f"{tw.source}: {len(vth)} vCPU threads; the replay models at "
                               f"most {MAX_TRACE_VCPUS}")
    templates = base.tasks or (HostTask("host"),)
    tasks = tuple(replace(templates[k % len(templates)], name=f"host-cpu{k}", cpu=k)
                  for k in range(ncpu))
    vt = base.vcpus[0] if base.vcpus else Vcpu("vcpu0")
    first_cpu: dict[int, int] = {}
    for _ts, cpu, kind, pid, a, _b, _c in tw.iter_events():
        who = a if kind == T.K_SWITCH else pid
        first_cpu.setdefault(who, cpu)
    vcpus = tuple(replace(base.vcpus[i] if i < len(base.vcpus) else vt, name=f"vcpu{th.vcpu}",
                          cpu=min(first_cpu.get(th.pid, 0), ncpu - 1))
                  for i, th in enumerate(vth))
    return replace(base, cpus=ncpu, tasks=tasks, vcpus=vcpus)


class TraceSimulator(Simulator):
    """Runs the model along a parsed trace instead of a random event stream."""

    def __init__(self, model: Model, workload: Workload, tw: T.TraceWorkload, seed: int = 0,
                 invariants: bool = True, observer: Any = None,
                 fp_plan: dict[int, list[tuple[bool, bool]]] | None = None) -> None:
        super().__init__(model, workload, seed=seed, invariants=invariants, observer=observer)
        self.tw = tw
        # Known guest FP use per vCPU and run segment, (fp, sve), in segment order
        # (from a validation scenario's definition), instead of a random draw.
        self.fp_plan = fp_plan
        self.site_rng = random.Random((seed << 2) ^ 0x7ACE)
        ncpu = model.ncpu
        self.host_of_cpu = list(range(1, ncpu + 1))           # model thread per CPU slot
        vth = tw.vcpu_threads()
        self.thread_of_pid = {th.pid: ncpu + 1 + th.vcpu for th in vth}
        self.repairs: Counter[str] = Counter()
        self.trace_reasons: Counter[str] = Counter()
        self.to_user = self._exits_to_user()
        # Trace softirqs replace the random in-gap ones (see the module docstring).
        self.sirq_p = workload.softirq_neon
        self.w = replace(workload, softirq_neon=0.0)

    # ---------------------------------------------------------------- set-up

    def _exits_to_user(self) -> set[int]:
        """Indices of kvm_exit events followed by a kvm_userspace_exit of the same
        thread before its next kvm_entry."""
        out: set[int] = set()
        pending: dict[int, int] = {}
        for i, (_ts, _cpu, kind, pid, _a, _b, _c) in enumerate(self.tw.iter_events()):
            if kind == T.K_EXIT:
                pending[pid] = i
            elif kind == T.K_UEXIT and pid in pending:
                out.add(pending.pop(pid))
            elif kind == T.K_ENTRY:
                pending.pop(pid, None)
        return out

    def model_thread(self, pid: int, cpu: int) -> int:
        if pid == 0:
            return 0
        t = self.thread_of_pid.get(pid)
        if t is not None:
            return t
        if not 0 <= cpu < len(self.host_of_cpu):
            # A field naming a CPU no line of the trace ran on (sched_migrate_task's
            # orig_cpu, say): not a thread the model has.
            self.repairs["event names a CPU outside the trace"] += 1
            return 0
        return self.host_of_cpu[cpu]

    # ------------------------------------------------------------- driving

    def _pc(self, t: int) -> int:
        return self.s[self.m.pc[t]] if t else self.m.L_IDLE

    def _kind(self, t: int) -> int:
        return self.m.p_kind[self._pc(t)] if t else K_IDLE

    def _where(self, t: int) -> int:
        """The CPU thread t runs on, or -1."""
        s, cur = self.s, self.m.cur
        for k in range(self.m.ncpu):
            if s[cur[k]] == t:
                return k
        return -1

    def _step(self, k: int) -> None:
        self._apply((STEP, k, 0))
        self._settle(k)

    def _to_switchable(self, k: int, to_idle: bool) -> None:
        """Bring CPU k's current thread to a point where the kernel may switch it
        out (to idle: a point where it may block)."""
        m = self.m
        for _ in range(MAX_DRIVE_STEPS):
            t = self.s[m.cur[k]]
            if not t:
                return
            pc = self._pc(t)
            kind = m.p_kind[pc]
            if m.p_preempt[pc] and not (to_idle and (kind == K_USER or pc == m.L_KNEON)):
                return
            if kind == K_GUEST:
                self._exit(k, t, EXIT_KERNEL, "irq")
                self.repairs["exit before a switch"] += 1
            elif kind == K_USER:
                self._apply((KVMRUN if m.vcpu_of[t] >= 0 else SYSCALL, k, 0))
                self._settle(k)
            else:
                self._step(k)
        raise RuntimeError(f"replay: CPU {k} did not reach a switch point")  # a model bug

    def _switch_to(self, k: int, t: int) -> None:
        """Make thread t current on CPU k (0: idle)."""
        m, s = self.m, self.s
        if s[m.cur[k]] == t:
            return
        if t:
            j = self._where(t)
            if j >= 0:
                # Running elsewhere: the trace lost its switch-out there.
                self.repairs["thread running on another CPU"] += 1
                self._to_switchable(j, True)
                self._apply((SCHED, j, 0))
                self._settle(j)
            if s[m.rq[t]] != k:
                self.repairs["missing migration"] += 1
                self._apply((MIGRATE, t, k))
        self._to_switchable(k, t == 0)
        self._apply((SCHED, k, t))
        self._settle(k)
        if t and m.vcpu_of[t] < 0 and self._kind(t) == K_USER:
            self._host_decision(k, t)

    def _host_decision(self, k: int, t: int) -> None:
        """A host thread switched in at EL0 does one thing the trace cannot show."""
        rnd = self.site_rng.random
        r = rnd()
        sysr, fp = self.t_sys[t], self.t_fp[t]
        if r < sysr:
            self._apply((SYSCALL, k, 0))
            self._settle(k)
            if self.m.task_kneon[t] and rnd() < self.w.kneon_task \
                    and self._pc(t) == self.m.L_SYS:
                self._apply((KNEON, k, 0))
                self._settle(k)
            for _ in range(MAX_DRIVE_STEPS):
                if self._kind(t) == K_USER:
                    break
                self._step(k)
        elif r < sysr + fp:
            sve = self.t_sve[t] and rnd() < self.t_sve[t]
            self._apply((USVE if sve else UFP, k, 0))

    def _enter(self, k: int, t: int) -> None:
        """Drive vCPU thread t on CPU k into the guest."""
        m = self.m
        v = m.vcpu_of[t]
        for _ in range(MAX_DRIVE_STEPS):
            pc = self._pc(t)
            kind = m.p_kind[pc]
            if kind == K_GUEST:
                return
            if kind == K_USER:
                if self.site_rng.random() < self.w.vmm_fp:
                    self._apply((UFP, k, 0))
                self._apply((KVMRUN, k, 0))
                self._settle(k)
            elif pc == m.L_TOP:
                plan = self.fp_plan.get(v) if self.fp_plan is not None else None
                if plan is not None:
                    i = self.seg_count[v]
                    fp, sve = plan[i] if i < len(plan) else (False, False)
                    self.seg_fp[v], self.seg_sve[v] = fp, fp and sve and m.vcpu_sve[v]
                    self.seg_used[v] = False
                    self.seg_count[v] += 1
                    self.segments += 1
                    self.segments_fp += fp
                else:
                    self._draw_segment(v)
                m.oracle_hint[v] = self.seg_fp[v]
                logged = len(m.pred_log) if m.pred_log is not None else 0
                self._step(k)
                if m.pred_log is not None and len(m.pred_log) > logged:
                    _v, guess = m.pred_log[-1]
                    self.confusion[(bool(guess), bool(self.seg_fp[v]))] += 1
            else:
                self._step(k)
        raise RuntimeError(f"replay: vCPU thread {t} did not reach the guest")

    def _exit(self, k: int, t: int, cls: int, reason: str) -> None:
        m = self.m
        v = m.vcpu_of[t]
        if self.seg_fp[v] and not self.seg_used[v]:
            self.seg_used[v] = True
            m.ctr[C.GUEST_FP_USES] += 1
            self._apply((GSVE if self.seg_sve[v] else GFP, k, 0))
        self.trace_reasons[reason] += 1
        self._apply((GEXIT, k, cls))
        self._settle(k)

    def _to_user(self, k: int, t: int) -> None:
        for _ in range(MAX_DRIVE_STEPS):
            kind = self._kind(t)
            if kind == K_USER:
                return
            if kind == K_GUEST:
                self.repairs["kvm_userspace_exit without kvm_exit"] += 1
                self._exit(k, t, EXIT_USER, "mmio")
            else:
                self._step(k)
        raise RuntimeError(f"replay: thread {t} did not return to userspace")

    def _ensure_running(self, k: int, t: int, what: str) -> None:
        if self.s[self.m.cur[k]] != t:
            self.repairs[f"{what} without a switch-in"] += 1
            self._switch_to(k, t)

    # ----------------------------------------------------------------- loop

    def _trace_event(self, i: int, ev: tuple[int, int, int, int, int, int, int]) -> None:
        _ts, cpu, kind, pid, a, b, c = ev
        m = self.m
        if kind == T.K_SWITCH:
            self._switch_to(cpu, self.model_thread(a, cpu))
        elif kind == T.K_ENTRY:
            t = self.model_thread(pid, cpu)
            if m.vcpu_of[t] < 0:
                return
            self._ensure_running(cpu, t, "kvm_entry")
            self._enter(cpu, t)
        elif kind == T.K_EXIT:
            t = self.model_thread(pid, cpu)
            if m.vcpu_of[t] < 0:
                return
            self._ensure_running(cpu, t, "kvm_exit")
            if self._kind(t) != K_GUEST:
                self.repairs["kvm_exit without kvm_entry"] += 1
                self._enter(cpu, t)
            reason = "irq" if c == 0 else EC_REASON.get(b, "other")
            cls = EXIT_USER if i in self.to_user else EXIT_KERNEL
            if reason == "mmio" and cls == EXIT_KERNEL:
                reason = "vgic"   # a data abort KVM handled itself
            self._exit(cpu, t, cls, reason)
        elif kind == T.K_UEXIT:
            t = self.model_thread(pid, cpu)
            if m.vcpu_of[t] < 0 or self.s[m.cur[cpu]] != t:
                return
            self._to_user(cpu, t)
        elif kind == T.K_MIGRATE:
            t = self.model_thread(pid, a)
            if not t or m.vcpu_of[t] < 0 or not 0 <= b < m.ncpu:
                return  # host threads are per-CPU slots in the model
            if self._where(t) >= 0:
                self.repairs["migration of a running thread"] += 1
                return
            if self.s[m.rq[t]] != b:
                self._apply((MIGRATE, t, b))
        elif kind == T.K_SOFTIRQ and self.sirq_p and self.site_rng.random() < self.sirq_p:
            cur = self.s[m.cur[cpu]]
            pc = self._pc(cur)
            if m.p_sirq[pc] or m.p_kind[pc] == K_IDLE:
                self._apply((SIRQ, cpu, 0))
            else:
                self.repairs["softirq NEON while in the guest"] += 1

    def run(self, events: int = -1, progress: Any = None) -> SimResult:
        """Replay the whole trace (or its first ``events`` events)."""
        m, s = self.m, self.s
        check = self.invariants
        total = self.tw.events if events < 0 else min(events, self.tw.events)
        every = max(1, total // 200)
        for i, ev in enumerate(self.tw.iter_events()):
            if i >= total:
                break
            self.event = i
            if progress is not None and i % every == 0:
                progress(i)
            self._trace_event(i, ev)
            if check:
                m.check_recoverable(s)
                if m.vio:
                    self._collect()
        if progress is not None:
            progress(total)
        self.event = total
        reasons = dict(self.trace_reasons.most_common())
        return SimResult(
            events=total, counters=list(m.ctr), exit_reasons=reasons,
            violations=self.viol_count, violations_by_invariant=dict(self.viol_by),
            violation_records=list(self.viol_records),
            segments=self.segments, segments_fp=self.segments_fp,
        )


