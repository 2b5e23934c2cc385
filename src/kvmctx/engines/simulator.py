"""The simulator: a workload's random event stream through the model.

Each event picks a CPU and decides what its current thread does next, from
the workload's rates, at a *rest point* of the flow (EL0, a syscall body,
the run loop top, the guest, after an exit...). Hook-internal steps are run
to the next rest point straight away, and whether a softirq lands in one of
their gaps is drawn from a second random stream.

That split is deliberate: decisions at rest points are the same for every
arm64 policy (they share the flow), so with one seed every policy sees the
same workload (same syscalls, exits, switches, guest FP uses) and their
costs are directly comparable. The gap stream differs only as much as the
designs' gaps differ.

Deterministic: same model, workload, seed and event count give the same
counters, bit for bit.
"""

from __future__ import annotations

import itertools
import random
from bisect import bisect
from dataclasses import dataclass, field
from typing import Any

from kvmctx.model import counters as C
from kvmctx.model.feat.fpmr import USER_FPMR
from kvmctx.model.feat.signals import SIGNAL, SIGRETURN
from kvmctx.model.feat.sme import USER_SME, USER_SMSTOP
from kvmctx.model.feat.sysregs import GSR_WRITE, HOST_TLS, SR_EMULATE
from kvmctx.model.feat.task_life import CLONE, EXIT, PRCTL_SME_VL, PRCTL_SVE_VL
from kvmctx.model.feat.vcpu_reset import PSCI_CPU_ON, SET_ONE_REG
from kvmctx.model.flow import EXIT_KERNEL, EXIT_USER, K_GUEST, K_IDLE, K_STEP, K_USER
from kvmctx.model.machine import (
    GEXIT,
    GFP,
    GSVE,
    KNEON,
    KVMRUN,
    MIGRATE,
    READ,
    SCHED,
    SIRQ,
    STEP,
    SYSCALL,
    UFP,
    USVE,
    Model,
)
from kvmctx.model.values import NO_CPU
from kvmctx.workloads.workload import EXIT_REASONS, Workload

MAX_VIOLATION_RECORDS = 20


@dataclass
class SimResult:
    events: int
    counters: list[int]
    exit_reasons: dict[str, int]
    violations: int
    violations_by_invariant: dict[str, int]
    violation_records: list[dict[str, Any]] = field(default_factory=list)
    segments: int = 0
    segments_fp: int = 0


class Simulator:
    def __init__(self, model: Model, workload: Workload, seed: int = 0,
                 invariants: bool = True, trace: list | None = None,
                 observer: Any = None) -> None:
        self.m = model
        self.w = workload
        self.seed = seed
        self.invariants = invariants
        model.check_invariants = invariants
        model.dedupe_lost = True
        self.rng = random.Random(seed)
        self.gap_rng = random.Random((seed << 1) ^ 0x5EED)
        self.s = model.new_state()
        self.trace = trace  # optional list receiving (event, action, n_violations) tuples
        # optional callable observer(sim, action, new_violations) after every applied action
        self.observer = observer
        m = model
        n = m.nthreads
        ws = workload
        # Per-thread rates (index = thread id).
        self.t_fp = [0.0] * n
        self.t_sve = [0.0] * n
        self.t_sys = [0.0] * n
        self.t_sme = [0.0] * n
        for i, ht in enumerate(ws.tasks, start=1):
            self.t_fp[i] = ht.fp
            self.t_sve[i] = ht.sve_use if ht.sve else 0.0
            self.t_sys[i] = ht.syscall
            self.t_sme[i] = ht.sme_use if m.task_sme[i] else 0.0
        self.reasons, self.reason_w = ws.exit_weights()
        self.reason_cls = [EXIT_USER if EXIT_REASONS[r][1] == "user" else EXIT_KERNEL
                           for r in self.reasons]
        self.reason_counts = [0] * len(self.reasons)
        self.reason_idx = list(range(len(self.reasons)))
        # random.choices(weights) and randrange(ncpu), inlined with the very same
        # draws (bisect on cumulative weights; getrandbits with rejection), so the
        # stream, and every result, is unchanged.
        self.reason_cum = list(itertools.accumulate(self.reason_w))
        self.reason_total = self.reason_cum[-1] if self.reason_cum else 0.0
        self.cpu_bits = m.ncpu.bit_length()
        self.seg_fp = [False] * m.nvcpu
        self.seg_sve = [False] * m.nvcpu
        self.seg_used = [False] * m.nvcpu
        self.seg_count = [0] * m.nvcpu
        self.last_fp = [False] * m.nvcpu
        self.block = [False] * n
        self.segments = 0
        self.segments_fp = 0
        self.viol_count = 0
        self.viol_by: dict[str, int] = {}
        self.viol_records: list[dict[str, Any]] = []
        self.event = 0
        self.fp_truth: list[list[bool]] = [[] for _ in range(m.nvcpu)]
        self.record_truth = False
        self.sysregs = "sysregs" in model.config.features
        feats = model.config.features
        self.vcpu_reset = "vcpu-reset" in feats and workload.vcpu_reset > 0
        self.one_reg = "one-reg" in feats and workload.one_reg > 0
        self.fpmr = "fpmr" in feats and workload.fpmr > 0
        self.sig = "sig-frames" in feats and "signals" in feats and (
            workload.sig_fpsimd > 0 or workload.sig_sve > 0 or workload.sig_sme > 0)
        self.vl_change = "vl" in feats and workload.vl_change > 0
        self.churn = "fork" in feats and workload.churn > 0
        self.respawn = {"fork", "vmm-respawn"} <= feats and workload.vcpu_respawn > 0
        # Host lifecycle features on (signals, ptrace, exec, PM, hotplug): their
        # enabled-action callbacks, asked at host EL0 and idle decisions.
        from kvmctx.model import features as F

        self.life = [f for name in ("signals", "exec", "pm", "hotplug", "ptrace")
                     if name in model.config.features and (f := F.get(name)) is not None]
        self.last_reason = [""] * m.nvcpu
        # Predictor bookkeeping: the truth for a perfect predictor, and the
        # confusion matrix of the predictions a design made (prediction, truth).
        model.oracle_hint = [False] * m.nvcpu
        model.pred_log = None
        self.confusion = {(g, u): 0 for g in (False, True) for u in (False, True)}

    # ---------------------------------------------------------------- helpers

    def _apply(self, a: tuple[int, int, int]) -> None:
        m = self.m
        m.apply(self.s, a)
        if self.trace is None and self.observer is None and not m.vio:
            return
        if self.trace is not None:
            self.trace.append((self.event, a, len(m.vio)))
        if self.observer is not None:
            self.observer(self, a, list(m.vio))
        if m.vio:
            self._collect()

    def _collect(self) -> None:
        m = self.m
        for v in m.vio:
            self.viol_count += 1
            self.viol_by[v.invariant] = self.viol_by.get(v.invariant, 0) + 1
            if len(self.viol_records) < MAX_VIOLATION_RECORDS:
                rec = v.as_dict(m)
                rec["event"] = self.event
                self.viol_records.append(rec)
        m.vio.clear()

    def _settle(self, k: int) -> None:
        """Run the thread on CPU k through hook-internal steps to a rest point."""
        m = self.m
        s = self.s
        while True:
            t = s[m.cur[k]]
            if not t:
                return
            pc = s[m.pc[t]]
            if m.p_kind[pc] != K_STEP or m.p_preempt[pc]:
                return
            if m.p_sirq[pc] and self.gap_rng.random() < self.w.softirq_neon:
                self._apply((SIRQ, k, 0))
            self._apply((STEP, k, 0))

    def _runnable(self, k: int, t: int) -> list[int]:
        m = self.m
        s = self.s
        cur = m.cur
        running = {s[cur[j]] for j in range(m.ncpu)}
        return [u for u in range(1, m.nthreads) if u != t and s[m.rq[u]] == k
                and u not in running]

    def _switch(self, k: int, t: int, allow_idle: bool) -> bool:
        cand = self._runnable(k, t)
        if allow_idle:
            cand.append(0)
        if not cand:
            return False
        nxt = cand[self.rng.randrange(len(cand))]
        self._apply((SCHED, k, nxt))
        self._settle(k)
        return True

    def _draw_segment(self, v: int) -> None:
        w = self.w
        r = self.rng.random()
        pat = w.guest_fp_pattern
        if pat == "bursty" and self.seg_count[v] and r < w.burst:
            fp = self.last_fp[v]
            self.rng.random()
        elif pat == "phased":
            heavy = (self.seg_count[v] // w.phase_len) % 2 == 0
            p = min(1.0, 2 * w.guest_fp) if heavy else 0.0
            fp = self.rng.random() < p
        else:
            if pat == "bursty":
                r = self.rng.random()
            fp = r < w.guest_fp
        self.seg_fp[v] = fp
        self.seg_sve[v] = fp and self.m.vcpu_sve[v] and self.rng.random() < w.guest_sve
        self.seg_used[v] = False
        self.seg_count[v] += 1
        self.last_fp[v] = fp
        self.segments += 1
        if fp:
            self.segments_fp += 1
        if self.record_truth:
            self.fp_truth[v].append(fp)

    def _event(self) -> None:
        """One workload decision on one CPU (plus whatever it sets off)."""
        m = self.m
        s = self.s
        w = self.w
        rng = self.rng
        rnd = rng.random
        ncpu = m.ncpu
        cur = m.cur
        vcpu_of = m.vcpu_of
        if ncpu > 1 and w.migrate and rnd() < w.migrate:
            running = {s[cur[j]] for j in range(ncpu)}
            cands = [u for u in range(1, m.nthreads)
                     if u not in running and s[m.rq[u]] != NO_CPU]   # (NO_CPU: free slot)
            if cands:
                u = cands[rng.randrange(len(cands))]
                d = rng.randrange(ncpu - 1)
                if d >= s[m.rq[u]]:
                    d += 1
                self._apply((MIGRATE, u, d))
                return
        bits = self.cpu_bits
        k = rng.getrandbits(bits)
        while k >= ncpu:
            k = rng.getrandbits(bits)
        t = s[cur[k]]
        if self.life and rnd() < w.host_life and self._life_event(k, t):
            return
        if self.sig and t and vcpu_of[t] < 0 and m.p_kind[s[m.pc[t]]] == K_USER:
            rate = w.sig_sme if m.task_sme[t] else w.sig_sve if m.task_sve[t] else w.sig_fpsimd
            if rate and rnd() < rate:
                # The irritator's signal, or the handler's return.
                self._apply((SIGRETURN if s[m.sig_on[t]] else SIGNAL, k, 0))
                self._settle(k)
                return
        if not t:
            r = rnd()
            if r < w.wake:
                self._switch(k, 0, False)
            elif r > 1.0 - w.softirq_neon:
                self._apply((SIRQ, k, 0))
            return
        pc = s[m.pc[t]]
        kind = m.p_kind[pc]
        if kind == K_GUEST:
            v = vcpu_of[t]
            if self.sysregs and rnd() < w.sysreg_write:
                self._apply((GSR_WRITE, k, rng.randrange(2)))
                return
            if self.seg_fp[v] and not self.seg_used[v]:
                self.seg_used[v] = True
                m.ctr[C.GUEST_FP_USES] += 1
                self._apply((GSVE if self.seg_sve[v] else GFP, k, 0))
            else:
                i = bisect(self.reason_cum, rnd() * self.reason_total, 0,
                           len(self.reason_cum) - 1)
                self.reason_counts[i] += 1
                self.last_reason[v] = self.reasons[i]
                if self.reasons[i] == "wfx" and rnd() < w.wfx_block:
                    self.block[t] = True
                self._apply((GEXIT, k, self.reason_cls[i]))
                self._settle(k)
            return
        r = rnd()
        if r < w.preempt:
            if m.p_preempt[pc] and self._switch(k, t, kind != K_USER):
                return
        elif r < w.preempt + w.softirq_neon and m.p_sirq[pc]:
            self._apply((SIRQ, k, 0))
            return
        r = rnd()
        if kind == K_USER:
            if vcpu_of[t] >= 0:
                if r < w.vmm_fp:
                    sve = w.vmm_sve and rnd() < w.vmm_sve
                    self._apply((USVE if sve else UFP, k, 0))
                elif self.one_reg and rnd() < w.one_reg:
                    self._apply((SET_ONE_REG, k, 0))
                    self._settle(k)
                elif self.respawn and rnd() < w.vcpu_respawn:
                    self._apply((EXIT, k, 0))       # the vCPU thread exits (vCPU unplug)
                else:
                    self._apply((KVMRUN, k, 0))
                    self._settle(k)
            else:
                sysr = self.t_sys[t]
                if r < sysr:
                    self._apply((SYSCALL, k, 0))
                elif r < sysr + self.t_fp[t]:
                    if self.t_sme[t] and rnd() < self.t_sme[t]:
                        # SMSTART and streaming/ZA writes; SMSTOP a third of the time
                        # once in streaming mode (a syscall also leaves it).
                        stop = (s[m.sm[k]] or s[m.za_on[k]]) and rnd() < 0.33
                        self._apply((USER_SMSTOP if stop else USER_SME, k, 0))
                    elif self.t_sve[t] and rnd() < self.t_sve[t]:
                        self._apply((USVE, k, 0))
                    elif self.fpmr and rnd() < w.fpmr:
                        self._apply((USER_FPMR, k, 0))
                    else:
                        self._apply((UFP, k, 0))
                elif self.sysregs and r > 0.97:
                    self._apply((HOST_TLS, k, 0))
                else:
                    self._apply((READ, k, 0))
            return
        if pc == m.L_SYS and vcpu_of[t] < 0 and (self.vl_change or self.churn or self.respawn) \
                and self._task_life(k, t):
            return
        if pc == m.L_SYS and m.task_kneon[t] and r < w.kneon_task:
            self._apply((KNEON, k, 0))
            return
        if self.sysregs and pc == m.L_POST and self.last_reason[vcpu_of[t]] == "sys64":
            # The SYS64 exit is a trapped sysreg access: emulate it through the accessors.
            self.last_reason[vcpu_of[t]] = ""
            self._apply((SR_EMULATE, k, rng.randrange(2)))
        if pc == m.L_TOP and self.block[t]:
            self.block[t] = False
            if self._switch(k, t, True):
                return
        if pc == m.L_TOP and self.vcpu_reset and rnd() < w.vcpu_reset:
            v = vcpu_of[t]
            if not s[m.reset_pending[v]]:
                self._apply((PSCI_CPU_ON, v, 0))   # served by the STEP below
        if pc == m.L_TOP:
            # The coming run segment is decided before the entry, so a design that
            # predicts (or the perfect predictor, through oracle_hint) acts on it.
            v = vcpu_of[t]
            self._draw_segment(v)
            m.oracle_hint[v] = self.seg_fp[v]
            logged = len(m.pred_log) if m.pred_log is not None else 0
            self._apply((STEP, k, 0))
            self._settle(k)
            if m.pred_log is not None and len(m.pred_log) > logged:
                _v, guess = m.pred_log[-1]
                self.confusion[(bool(guess), bool(self.seg_fp[v]))] += 1
            return
        self._apply((STEP, k, 0))
        self._settle(k)

    def _task_life(self, k: int, t: int) -> bool:
        """Host task t in a syscall on CPU k: maybe a VL change, a clone() or an exit()."""
        m, s, w = self.m, self.s, self.w
        rnd = self.rng.random
        sve, sme = m.task_sve[t], m.task_sme[t]
        if self.vl_change and (sve or sme) and rnd() < w.vl_change:
            use_sme = sme and (not sve or rnd() < 0.5)
            self._apply((PRCTL_SME_VL if use_sme else PRCTL_SVE_VL, k, 0))
            return True
        if self.respawn:
            # The VMM's main thread re-creates an exited vCPU thread at its next
            # syscall (the new thread gets the dead one's task_struct).
            dead = [u for u in range(1, m.nthreads) if m.vcpu_of[u] >= 0
                    and s[m.rq[u]] == NO_CPU]
            if dead:
                self._apply((CLONE, k, dead[0]))
                return True
        if self.churn and rnd() < w.churn:
            host = [u for u in range(1, m.nthreads) if m.vcpu_of[u] < 0]
            free = [u for u in host if s[m.rq[u]] == NO_CPU]
            if free:
                self._apply((CLONE, k, free[int(rnd() * len(free))]))
                return True
            if len(host) > 1:
                self._apply((EXIT, k, 0))
                return True
        return False

    def _life_event(self, k: int, t: int) -> bool:
        """A signal, sigreturn, execve, PM or hotplug cycle on CPU k, or a ptrace
        write to a stopped task, if one is possible now."""
        m, s = self.m, self.s
        pc = s[m.pc[t]] if t else m.L_IDLE
        kind = m.p_kind[pc]
        if kind not in (K_USER, K_IDLE) or (t and m.vcpu_of[t] >= 0):
            return False
        out: list[tuple[int, int, int]] = []
        running = {s[m.cur[j]] for j in range(m.ncpu)}
        for f in self.life:
            if f.enabled is not None:
                f.enabled(m, s, k, t, pc, kind, out)
            if f.enabled_global is not None:
                f.enabled_global(m, s, running, out)
        if not out:
            return False
        self._apply(out[int(self.rng.random() * len(out))])
        self._settle(k)
        return True

    # ------------------------------------------------------------------ loop

    def run(self, events: int, progress: Any = None) -> SimResult:
        """Run ``events`` decisions; ``progress(n)`` is called now and then."""
        m = self.m
        s = self.s
        check = self.invariants
        every = max(1, events // 200)
        one = self._event
        for ev in range(events):
            self.event = ev
            if progress is not None and ev % every == 0:
                progress(ev)
            one()
            if check:
                m.check_recoverable(s)
                if m.vio:
                    self._collect()
        if progress is not None:
            progress(events)
        self.event = events
        return SimResult(
            events=events, counters=list(m.ctr),
            exit_reasons={self.reasons[i]: self.reason_counts[i]
                          for i in range(len(self.reasons))},
            violations=self.viol_count, violations_by_invariant=dict(self.viol_by),
            violation_records=list(self.viol_records),
            segments=self.segments, segments_fp=self.segments_fp,
        )
