"""Perfetto / Chrome trace-event timelines of a simulation.

Two processes in the trace: "FP registers" has one track per CPU whose
slices say whose state the CPU's FPSIMD registers hold (a context's name,
"zero" or "garbage"); "running" has one track per CPU with the thread on it
(and "in guest" while a vCPU runs). Instants on the register tracks mark
FP traps, saves, restores and invariant violations (with their message).

Time: with a real trace, the trace's own timestamps (each model action of
one trace event spread over a nanosecond-sized step after it); otherwise
one microsecond per model action. Open the file at https://ui.perfetto.dev
(Open trace file) or chrome://tracing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kvmctx.model import counters as C
from kvmctx.model.flow import K_GUEST
from kvmctx.model.values import GARBAGE, OWNER_MASK, ZERO

PID_REGS = 1
PID_RUN = 2
INSTANT_COUNTERS = ((C.GUEST_FP_TRAPS, "guest FP trap"), (C.HOST_SVE_TRAPS, "host SVE trap"),
                    (C.SAVES, "save"), (C.RESTORES, "restore"))


class TimelineRecorder:
    """A simulator observer that builds trace events."""

    def __init__(self, model: Any, max_events: int = 2_000_000) -> None:
        self.m = model
        self.events: list[dict[str, Any]] = []
        self.max_events = max_events
        self.truncated = False
        n = model.ncpu
        self.reg_open: list[tuple[str, float] | None] = [None] * n
        self.run_open: list[tuple[str, float] | None] = [None] * n
        self.last_ctr = list(model.ctr)
        self.step = 0
        self.t_last = 0.0
        self.t0: int | None = None
        self.sub = 0

    # ------------------------------------------------------------ time

    def _now(self, sim: Any) -> float:
        tw = getattr(sim, "tw", None)
        if tw is not None and tw.events:
            i = min(sim.event, tw.events - 1)
            if self.t0 is None:
                self.t0 = tw.ts_ns[0]
            base = (tw.ts_ns[i] - self.t0) / 1000.0
            t = max(base, self.t_last + 0.001)
        else:
            self.step += 1
            t = float(self.step)
        self.t_last = t
        return t

    # ------------------------------------------------------------ naming

    def _reg_name(self, tagv: int) -> str:
        if tagv == ZERO:
            return "zero"
        if tagv == GARBAGE:
            return "garbage"
        return self.m.name(tagv & OWNER_MASK)

    def _run_name(self, s: list[int], k: int) -> str:
        m = self.m
        t = s[m.cur[k]]
        if not t:
            return "idle"
        if m.p_kind[s[m.pc[t]]] == K_GUEST:
            return f"{m.name(m.vctx[m.vcpu_of[t]])} in guest"
        return m.tname(t)

    # ------------------------------------------------------------ events

    def _emit(self, ev: dict[str, Any]) -> None:
        if len(self.events) >= self.max_events:
            self.truncated = True
            return
        self.events.append(ev)

    def _slice(self, pid: int, k: int, name: str, start: float, end: float) -> None:
        self._emit({"name": name, "ph": "X", "ts": start, "dur": max(0.0, end - start),
                    "pid": pid, "tid": k, "cat": "regs" if pid == PID_REGS else "run"})

    def __call__(self, sim: Any, action: tuple[int, int, int], vio: list[Any]) -> None:
        m = self.m
        s = sim.s
        t = self._now(sim)
        for k in range(m.ncpu):
            rn = self._reg_name(s[m.lo[k]])
            cur = self.reg_open[k]
            if cur is None or cur[0] != rn:
                if cur is not None:
                    self._slice(PID_REGS, k, cur[0], cur[1], t)
                self.reg_open[k] = (rn, t)
            un = self._run_name(s, k)
            cur = self.run_open[k]
            if cur is None or cur[0] != un:
                if cur is not None:
                    self._slice(PID_RUN, k, cur[0], cur[1], t)
                self.run_open[k] = (un, t)
        k_act = action[1] if 0 <= action[1] < m.ncpu else 0
        ctr = m.ctr
        text = ""
        for idx, label in INSTANT_COUNTERS:
            d = ctr[idx] - self.last_ctr[idx]
            if d > 0:
                if not text:
                    try:
                        text = m.action_text(s, action)
                    except (IndexError, KeyError, ValueError):
                        text = str(action)
                self._emit({"name": label, "ph": "i", "s": "t", "ts": t, "pid": PID_REGS,
                            "tid": k_act, "cat": "fp", "args": {"count": d, "after": text}})
        self.last_ctr = list(ctr)
        for v in vio:
            self._emit({"name": f"VIOLATION: {v.invariant}", "ph": "i", "s": "p", "ts": t,
                        "pid": PID_REGS, "tid": v.cpu if v.cpu >= 0 else k_act,
                        "cat": "violation", "args": {"message": v.message}})

    def finish(self) -> dict[str, Any]:
        t = self.t_last + 1.0
        for k in range(self.m.ncpu):
            if self.reg_open[k] is not None:
                self._slice(PID_REGS, k, self.reg_open[k][0], self.reg_open[k][1], t)
            if self.run_open[k] is not None:
                self._slice(PID_RUN, k, self.run_open[k][0], self.run_open[k][1], t)
        meta: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": PID_REGS, "tid": 0,
             "args": {"name": "FP registers (whose state each CPU holds)"}},
            {"name": "process_name", "ph": "M", "pid": PID_RUN, "tid": 0,
             "args": {"name": "running (thread on each CPU)"}},
        ]
        for k in range(self.m.ncpu):
            for pid in (PID_REGS, PID_RUN):
                meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": k,
                             "args": {"name": f"CPU{k}"}})
        return {"traceEvents": meta + self.events, "displayTimeUnit": "ns",
                "otherData": {"truncated": self.truncated}}


def build_timeline(policy: str, scenario: str = "default", seed: int = 0,
                   events: int = 5000, knobs: dict[str, Any] | None = None,
                   trace: Any = None, cost_profile: str | None = None) -> dict[str, Any]:
    """Run one policy with the recorder attached and return the trace JSON object."""
    from kvmctx import api
    from kvmctx.engines.simulator import Simulator
    from kvmctx.model.machine import Model

    holder: dict[str, TimelineRecorder] = {}

    def observer(sim: Any, action: tuple[int, int, int], vio: list[Any]) -> None:
        rec = holder.get("r")
        if rec is None:
            rec = holder["r"] = TimelineRecorder(sim.m)
        rec(sim, action, vio)

    if trace is not None:
        r = api.run_trace(trace, policy, seed=seed, knobs=knobs, cost_profile=cost_profile,
                          scenario=scenario, events=events, observer=observer)
    else:
        pol = api.resolve_policy(policy)
        _name, w = api.resolve_workload(scenario, knobs)
        w, _ = api.adapt_workload(pol, w, knobs or {})
        model = Model(w.model_config(), pol)
        sim = Simulator(model, w, seed=seed, invariants=True, observer=observer)
        sim.run(events)
        r = None
    rec = holder.get("r")
    if rec is None:
        raise api.UsageError("nothing happened in the run: no timeline to draw")
    out = rec.finish()
    out["otherData"].update({"policy": policy, "scenario": scenario, "seed": seed,
                             "events": events, "kvmctx": "timeline v1",
                             "trace": trace.source if trace is not None else ""})
    if r is not None:
        out["otherData"]["assumptions"] = r.assumptions[:3]
    return out


def write_timeline(obj: dict[str, Any], path: str | Path) -> None:
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, separators=(",", ":"))
    tmp.replace(p)
