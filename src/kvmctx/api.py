"""The library entry points the CLI, sweeps and reports share.

``run(...)`` is one simulation: a policy on a workload for a number of
events with a seed, priced with a cost profile. Its result's ``as_json()``
is the public JSON contract of ``kvmctx run --json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kvmctx import __version__
from kvmctx import policies as P
from kvmctx.costs.profiles import CostProfile, load_profile
from kvmctx.engines.simulator import SimResult, Simulator
from kvmctx.model import counters as C
from kvmctx.model.machine import Model
from kvmctx.policies.base import Policy
from kvmctx.workloads import scenarios as S
from kvmctx.workloads.workload import Workload, validate_knob


class UsageError(ValueError):
    """Bad input from the user: reported as one line with exit status 2."""


def resolve_policy(name: str | Policy) -> Policy:
    if isinstance(name, Policy):
        return name
    try:
        return P.get(name)
    except KeyError:
        raise UsageError(f"unknown policy {name!r}; valid: {', '.join(P.names())}, "
                         "oracle") from None


def resolve_workload(scenario: str | Workload, knobs: dict[str, Any] | None = None
                     ) -> tuple[str, Workload]:
    if isinstance(scenario, Workload):
        name, w = "custom", scenario
    else:
        try:
            name, w = scenario, S.get(scenario).workload
        except KeyError:
            raise UsageError(f"unknown scenario {scenario!r}; valid: "
                             f"{', '.join(S.SCENARIOS)}") from None
    clean: dict[str, Any] = {}
    for key, val in (knobs or {}).items():
        if val is None:
            continue
        try:
            clean[key] = validate_knob(key, val)
        except ValueError as e:
            raise UsageError(str(e)) from None
    if clean:
        w = w.with_knobs(**clean)
    return name, w


def adapt_workload(policy: Policy, w: Workload, explicit: dict[str, Any]
                   ) -> tuple[Workload, list[str]]:
    """Fit a scenario to what a design's era could run, or refuse an explicit request.

    A built-in scenario still runs on a design that cannot express one of its
    features: SVE vCPUs run FPSIMD-only on designs that predate vCPU SVE (v5.2),
    SVE host tasks run FPSIMD-only where the design has no SVE, and softirq or
    task kernel-mode NEON is left out where it did not exist (arm32 in 2012).
    The result says so. Asking for the feature explicitly (``--vl``,
    ``--guest-sve``, ``--softirq-neon``) on such a design is a usage error.
    """
    notes: list[str] = []
    missing = w.features() - policy.supports
    if not missing:
        return w, notes
    asked = {"sve": "vmm_sve" if explicit.get("vmm_sve") else "vl", "guest-sve": "guest_sve",
             "softirq-neon": "softirq_neon", "sysregs": "sysregs", "sme": "svl"}
    for feat in sorted(missing):
        knob = asked.get(feat)
        if knob and explicit.get(knob):
            raise UsageError(f"policy {policy.name} cannot model {feat} (asked for with "
                             f"--{knob.replace('_', '-')}); see 'kvmctx policies'")
    if "guest-sve" in missing:
        w = replace(w, vcpus=tuple(replace(v, sve=False) for v in w.vcpus), guest_sve=0.0)
        notes.append(f"{policy.name} cannot give a vCPU SVE: SVE vCPUs run FPSIMD-only here")
    if "sve" in missing:
        w = replace(w, tasks=tuple(replace(t, sve=False) for t in w.tasks), vmm_sve=0.0)
        notes.append(f"{policy.name} has no host SVE: SVE host tasks run FPSIMD-only here")
    if "sme" in missing:
        w = replace(w, tasks=tuple(replace(t, sme=False) for t in w.tasks))
        notes.append(f"{policy.name} has no SME: SME host tasks run without streaming mode "
                     "or ZA here")
    if "softirq-neon" in missing:
        w = replace(w, softirq_neon=0.0)
        notes.append(f"{policy.name} has no softirq kernel-mode NEON: left out")
    if "sysregs" in missing:
        w = replace(w, sysregs="")
        notes.append(f"{policy.name} has no deferred-sysreg model: sysregs left out")
    life = missing & {"signals", "ptrace", "exec", "pm", "hotplug"}
    if life:
        if explicit.get("host_life"):
            raise UsageError(f"policy {policy.name} cannot model {', '.join(sorted(life))} "
                             "(asked for with --host-life); see 'kvmctx policies'")
        w = replace(w, host_life=0.0)
        notes.append(f"{policy.name} has no host lifecycle events: left out")
    if missing & {"signals", "sig-frames"}:
        # Signal frames (sig-frames): a design that cannot model them runs without the
        # irritator's signals.
        w = replace(w, sig_fpsimd=0.0, sig_sve=0.0, sig_sme=0.0)
        if "sig-frames" in missing:
            notes.append(f"{policy.name} cannot model sig-frames: signals left out")
    for feat, knob in (("vcpu-reset", "vcpu_reset"), ("one-reg", "one_reg"), ("fpmr", "fpmr"),
                       ("vl", "vl_change"), ("fork", "churn"),
                       ("vmm-respawn", "vcpu_respawn")):
        if feat in missing:
            if feat in ("vl", "fork", "vmm-respawn") and explicit.get(knob):
                raise UsageError(f"policy {policy.name} cannot model {feat} (asked for with "
                                 f"--{knob.replace('_', '-')}); see 'kvmctx policies'")
            w = replace(w, **{knob: 0.0})
            notes.append(f"{policy.name} cannot model {feat}: left out")
    if "kernel-neon" in missing:
        w = replace(w, tasks=tuple(replace(t, kneon=False) for t in w.tasks))
        notes.append(f"{policy.name} has no task kernel-mode NEON: left out")
    still = sorted(w.features() - policy.supports)
    if still:
        raise UsageError(f"policy {policy.name} cannot model feature(s) {', '.join(still)} "
                         "that this workload uses")
    return w, notes


@dataclass
class RunResult:
    policy: str
    scenario: str
    seed: int
    events: int
    sim: SimResult
    profile: CostProfile
    workload: Workload
    knobs: dict[str, Any] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)   # e.g. "trace": import summary

    @property
    def counters(self) -> dict[str, int]:
        return C.as_dict(self.sim.counters)

    def cycles(self) -> dict[str, float]:
        return self.profile.cycles(self.sim.counters)

    def metrics(self) -> dict[str, Any]:
        c = self.sim.counters
        cyc = self.cycles()
        return {
            "fp_traps": c[C.GUEST_FP_TRAPS] + c[C.HOST_SVE_TRAPS] + c[C.HOST_SME_TRAPS],
            "saves": c[C.SAVES],
            "restores": c[C.RESTORES],
            "bytes_saved": c[C.BYTES_SAVED],
            "bytes_restored": c[C.BYTES_RESTORED],
            "guest_exits": c[C.GUEST_EXITS],
            "cycles": round(cyc["total"]),
            "violations": self.sim.violations,
        }

    def as_json(self) -> dict[str, Any]:
        c = self.sim.counters
        cyc = self.cycles()
        exits = max(1, c[C.GUEST_EXITS])
        return {
            "policy": self.policy,
            "scenario": self.scenario,
            "seed": self.seed,
            "events": self.events,
            "metrics": self.metrics(),
            "derived": {
                "guest_fp_traps": c[C.GUEST_FP_TRAPS],
                "host_sve_traps": c[C.HOST_SVE_TRAPS],
                "saves_restores_per_1k_exits": round(1000 * (c[C.SAVES] + c[C.RESTORES]) / exits,
                                                     3),
                "fp_traps_per_1k_exits": round(1000 * c[C.GUEST_FP_TRAPS] / exits, 3),
                "cycles_per_exit": round(cyc["total"] / exits, 3),
                "guest_fp_segments": self.sim.segments_fp,
                "guest_segments": self.sim.segments,
            },
            "cycles_breakdown": {k: round(v) for k, v in cyc.items()},
            "counters": C.as_dict(c),
            "exit_reasons": self.sim.exit_reasons,
            "violations_by_invariant": self.sim.violations_by_invariant,
            "violation_examples": self.sim.violation_records,
            "cost_profile": self.profile.name,
            "knobs": self.knobs,
            "assumptions": self.assumptions,
            "kvmctx_version": __version__,
            **self.extra,
        }


ORACLE = "oracle"
# The reference design whose run supplies the oracle's (design-independent) trace.
ORACLE_REFERENCE = "upstream-6.14"


def policy_names() -> list[str]:
    """Every name run/compare accept: the policies, their variants, and the oracle."""
    return P.names() + [ORACLE]


def run(policy: str | Policy = "upstream-6.14", scenario: str | Workload = "default",
        seed: int = 0, events: int = 100_000, knobs: dict[str, Any] | None = None,
        cost_profile: str | CostProfile | None = None, invariants: bool = True,
        progress: Any = None) -> RunResult:
    if policy == ORACLE:
        return run_oracle(scenario, seed, events, knobs, cost_profile, progress)
    if events < 0:
        raise UsageError("events must be >= 0")
    if seed < 0:
        raise UsageError("seed must be >= 0")
    pol = resolve_policy(policy)
    sc_name, w = resolve_workload(scenario, knobs)
    w, notes = adapt_workload(pol, w, knobs or {})
    try:
        prof = cost_profile if isinstance(cost_profile, CostProfile) else load_profile(cost_profile)
    except ValueError as e:
        raise UsageError(str(e)) from None
    model = Model(w.model_config(), pol)
    sim = Simulator(model, w, seed=seed, invariants=invariants)
    res = sim.run(events, progress=progress)
    assumptions = [f"guest FP use: {w.guest_fp_pattern} with p={w.guest_fp} per run segment"]
    assumptions += notes
    assumptions += [f"cost {k}: {c.source}" for k, c in prof.costs.items() if c.mark == "a"]
    return RunResult(pol.name, sc_name, seed, events, res, prof, w,
                     {k: v for k, v in (knobs or {}).items() if v is not None}, assumptions)


def run_oracle(scenario: str | Workload = "default", seed: int = 0, events: int = 100_000,
               knobs: dict[str, Any] | None = None,
               cost_profile: str | CostProfile | None = None, progress: Any = None,
               like: str | Policy | None = None) -> RunResult:
    """The oracle lower bound on a workload (kvmctx.engines.oracle).

    ``like``: fit the workload as for that design first (e.g. arm32-vfp-2012 runs
    SVE tasks FPSIMD-only), so the bound is for exactly the workload it ran.
    """
    from kvmctx.engines.oracle import FpTrace

    if events < 0:
        raise UsageError("events must be >= 0")
    ref = resolve_policy(ORACLE_REFERENCE)
    sc_name, w = resolve_workload(scenario, knobs)
    if like is not None:
        w, _ = adapt_workload(resolve_policy(like), w, knobs or {})
    w, notes = adapt_workload(ref, w, knobs or {})
    try:
        prof = cost_profile if isinstance(cost_profile, CostProfile) else load_profile(cost_profile)
    except ValueError as e:
        raise UsageError(str(e)) from None
    model = Model(w.model_config(), ref)
    trace = FpTrace()
    sim = Simulator(model, w, seed=seed, invariants=False, observer=trace.observer)
    res = sim.run(events, progress=progress)
    sizes = model
    if like is not None:
        sizes = Model(w.model_config(), resolve_policy(like))  # its register-file sizes
    _oracle_replace(res, trace, sizes)
    assumptions = [f"guest FP use: {w.guest_fp_pattern} with p={w.guest_fp} per run segment",
                   "oracle: least FP save/restore work for this workload's sequence of FP "
                   "uses, no traps (a lower bound, not a design)"] + notes
    return RunResult(ORACLE, sc_name, seed, events, res, prof, w,
                     {k: v for k, v in (knobs or {}).items() if v is not None}, assumptions)


def _oracle_replace(res: SimResult, trace: Any, sizes: Model) -> None:
    """Keep a run's workload counts (exits, switches...) and replace its FP work
    with the oracle's schedule for the same sequence of FP uses."""
    from kvmctx.engines.oracle import oracle_counters

    sme = sizes.has_sme
    octr = oracle_counters(trace, sizes.fpsimd_bytes, sizes.sve_bytes, sizes.ncpu,
                           sizes.ssve_bytes if sme else None, sizes.za_bytes if sme else None)
    ctr = list(res.counters)
    for i in (C.GUEST_FP_TRAPS, C.HOST_SVE_TRAPS, C.SAVES, C.RESTORES, C.BYTES_SAVED,
              C.BYTES_RESTORED, C.SVE_SAVES, C.SVE_RESTORES, C.TRAP_WRITES, C.ISBS,
              C.SYSREG_SAVES, C.SYSREG_RESTORES, C.EAGER_RESTORES, C.HOST_SME_TRAPS,
              C.ZA_SAVES, C.ZA_RESTORES):
        ctr[i] = octr[i]
    res.counters = ctr
    res.violations = 0
    res.violations_by_invariant = {}
    res.violation_records = []


PREDICTORS = ("last-trap", "counter", "ewma", "perfect")


def predictor_table(scenario: str | Workload = "default", seed: int = 0, events: int = 50_000,
                    knobs: dict[str, Any] | None = None,
                    cost_profile: str | CostProfile | None = None) -> list[dict[str, Any]]:
    """Eager-restore predictors on one workload: accuracy against what the guest did,
    cycles saved and lost against the lazy baseline, and the gap to the perfect
    predictor and to the oracle lower bound (seed 002's question)."""
    base = run(ORACLE_REFERENCE, scenario, seed, events, knobs, cost_profile)
    prof = base.profile
    oracle = run_oracle(scenario, seed, events, knobs, prof)
    rows: list[dict[str, Any]] = []
    results: dict[str, RunResult] = {}
    for kind in PREDICTORS:
        pol = resolve_policy(f"eager-{kind}")
        sc_name, w = resolve_workload(scenario, knobs)
        w, _notes = adapt_workload(pol, w, knobs or {})
        model = Model(w.model_config(), pol)
        model_sim = Simulator(model, w, seed=seed, invariants=False)
        model.pred_log = []
        res = model_sim.run(events)
        rr = RunResult(pol.name, sc_name, seed, events, res, prof, w, dict(knobs or {}), [])
        results[kind] = rr
        cf = model_sim.confusion
        tp, fp = cf[(True, True)], cf[(True, False)]
        fn, tn = cf[(False, True)], cf[(False, False)]
        n = tp + fp + fn + tn
        fp_bytes = model.fpsimd_bytes[model.vctx[0]] if model.nvcpu else 520
        if model.nvcpu and model.vcpu_sve[0]:
            fp_bytes = model.sve_bytes[model.vctx[0]]
        wasted = prof["fpsimd_restore"] / 520.0 * fp_bytes + prof["fpsimd_save"] / 520.0 * fp_bytes
        rows.append({
            "predictor": kind, "tp": tp, "fp": fp, "tn": tn, "fn": fn, "predictions": n,
            "accuracy": round((tp + tn) / n, 4) if n else None,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "cycles": round(rr.cycles()["total"]),
            "cycles_saved": round(tp * prof["guest_fp_trap"]),
            "cycles_lost": round(fp * wasted),
            "net_vs_lazy": round(base.cycles()["total"] - rr.cycles()["total"]),
            "violations": res.violations,
        })
    perfect = results["perfect"].cycles()["total"]
    low = oracle.cycles()["total"]
    for row in rows:
        row["gap_to_perfect"] = round(row["cycles"] - perfect)
        row["gap_to_oracle"] = round(row["cycles"] - low)
    rows.append({"predictor": "none (lazy, upstream-6.14)", "cycles": round(base.cycles()["total"]),
                 "gap_to_perfect": round(base.cycles()["total"] - perfect),
                 "gap_to_oracle": round(base.cycles()["total"] - low)})
    rows.append({"predictor": "oracle (lower bound)", "cycles": round(low), "gap_to_oracle": 0})
    return rows


def load_trace(path: str) -> Any:
    """A parsed trace: ``trace-cmd report``/tracefs text, or a workload Parquet
    written by ``kvmctx import-trace``."""
    from kvmctx.io import trace as T

    try:
        if str(path).endswith(".parquet"):
            return T.TraceWorkload.from_parquet(path)
        return T.parse_file(path)
    except T.TraceFormatError as e:
        raise UsageError(str(e)) from None


def run_trace(path: str | Any, policy: str | Policy = "upstream-6.14", seed: int = 0,
              knobs: dict[str, Any] | None = None,
              cost_profile: str | CostProfile | None = None, scenario: str = "default",
              events: int = -1, invariants: bool = True, progress: Any = None,
              observer: Any = None, sim_out: list[Any] | None = None,
              fp_plan: dict[int, list[tuple[bool, bool]]] | None = None) -> RunResult:
    """A policy on a real trace (kvmctx.engines.trace_driver): the trace gives
    the schedule and the exits, ``scenario`` + ``knobs`` what the trace cannot
    show (guest and host FP use, softirq NEON, vector lengths)."""
    from kvmctx.engines.trace_driver import TraceReplayError, TraceSimulator, trace_workload

    tw = load_trace(path) if isinstance(path, str) else path
    is_oracle = policy == ORACLE
    pol = resolve_policy(ORACLE_REFERENCE if is_oracle else policy)
    _name, base = resolve_workload(scenario, knobs)
    try:
        w = trace_workload(tw, base)
    except TraceReplayError as e:
        raise UsageError(str(e)) from None
    w, notes = adapt_workload(pol, w, knobs or {})
    try:
        prof = cost_profile if isinstance(cost_profile, CostProfile) else load_profile(cost_profile)
    except ValueError as e:
        raise UsageError(str(e)) from None
    model = Model(w.model_config(), pol)
    fptrace = None
    if is_oracle:
        from kvmctx.engines.oracle import FpTrace

        fptrace = FpTrace()
        observer, invariants = fptrace.observer, False
    sim = TraceSimulator(model, w, tw, seed=seed, invariants=invariants, observer=observer,
                         fp_plan=fp_plan)
    if sim_out is not None:
        sim_out.append(sim)
        model.pred_log = []
    res = sim.run(events, progress=progress)
    if fptrace is not None:
        _oracle_replace(res, fptrace, model)
        notes = notes + ["oracle: least FP save/restore work for this trace's sequence of FP "
                         "uses, no traps (a lower bound, not a design)"]
    summary = tw.summary()
    skipped = sum(summary["skipped"].values())
    assumptions = [
        f"trace {tw.source}: {summary['events']} events on {summary['cpus']} CPUs, "
        f"{len(summary['vcpus'])} vCPU threads; {skipped} lines skipped, "
        f"{summary['lost_events']} lost-event markers",
        f"guest FP use is not in traces: modelled as {w.guest_fp_pattern} with "
        f"p={w.guest_fp} per run segment (seed {seed})",
        f"host threads other than vCPUs: one model task per CPU with the rates of scenario "
        f"{scenario!r}'s host tasks; softirq NEON: p={w.softirq_neon} per softirq_entry",
    ] + notes
    assumptions += [f"cost {k}: {c.source}" for k, c in prof.costs.items() if c.mark == "a"]
    extra = {"trace": {"source": tw.source, "lines": summary["lines"],
                       "events": summary["events"], "skipped": summary["skipped"],
                       "skipped_examples": summary["skipped_examples"],
                       "lost_events": summary["lost_events"], "late": summary["late"],
                       "ignored": summary["ignored"], "repairs": dict(sim.repairs)}}
    name = ORACLE if is_oracle else pol.name
    return RunResult(name, f"trace:{Path(tw.source).name}", seed, res.events, res, prof, w,
                     {k: v for k, v in (knobs or {}).items() if v is not None}, assumptions,
                     extra)
