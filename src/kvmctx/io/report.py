"""`kvmctx report`: one self-contained HTML page comparing policies on a workload.

Sections: the comparison table (with the oracle lower bound and each
policy's gap to it), the cost breakdown per policy, traps/saves/restores per
1k exits, eager-restore predictor accuracy (seed 002's question), sensitivity
to the SVE vector length, and the workload's assumptions and cost sources.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvmctx.io.html import esc, figure_png, page, table

VLS = (128, 256, 512, 1024, 2048)
MARK_WORDS = {"v": "verified", "r": "reported", "a": "assumed"}
COMPONENTS = ("traps", "saves", "restores", "trap_control", "sysregs")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _breakdown_plot(results: list[Any]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    names = [r.policy for r in results]
    bottom = [0.0] * len(results)
    for comp in COMPONENTS:
        vals = [r.cycles().get(comp, 0.0) for r in results]
        if not any(vals):
            continue
        ax.bar(names, vals, bottom=bottom, label=comp)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("FP-switching cycles")
    ax.set_title("Cost breakdown per policy")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    return figure_png(fig)


def _per_exit_plot(results: list[Any]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    names = [r.policy for r in results]
    width = 0.27
    xs = list(range(len(results)))
    for i, (label, key) in enumerate((("FP traps", "fp_traps"), ("saves", "saves"),
                                      ("restores", "restores"))):
        vals = [1000 * r.metrics()[key] / max(1, r.metrics()["guest_exits"]) for r in results]
        ax.bar([x + (i - 1) * width for x in xs], vals, width, label=label)
    ax.set_xticks(xs, names, rotation=30)
    ax.set_ylabel("per 1,000 guest exits")
    ax.set_title("Traps, saves and restores per 1k exits")
    ax.legend(fontsize=8)
    return figure_png(fig)


def _predictor_plot(rows: list[dict[str, Any]]) -> str:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    rows = [r for r in rows if "tp" in r]
    names = [r["predictor"] for r in rows]
    for key in ("accuracy", "precision", "recall"):
        a1.plot(names, [r[key] if r[key] is not None else float("nan") for r in rows],
                marker="o", label=key)
    a1.set_ylim(0, 1.05)
    a1.set_title("Predictor accuracy")
    a1.legend(fontsize=8)
    a2.bar(names, [r["net_vs_lazy"] for r in rows],
           color=["#1b7f3b" if r["net_vs_lazy"] >= 0 else "#b3261e" for r in rows])
    a2.axhline(0, color="#333", lw=.8)
    a2.set_title("Cycles saved vs the lazy baseline (negative: lost)")
    return figure_png(fig)


def _vl_plot(curves: dict[str, list[tuple[int, float]]]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for pol, pts in curves.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=pol)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(VLS), [str(v) for v in VLS])
    ax.set_xlabel("SVE vector length (bits)")
    ax.set_ylabel("FP-switching cycles")
    ax.set_title("Sensitivity to the vector length")
    ax.legend(fontsize=8)
    return figure_png(fig)


def build_report(policies: list[str], scenario: str = "default", seed: int = 0,
                 events: int = 20_000, knobs: dict[str, Any] | None = None,
                 cost_profile: str | None = None, trace: Any = None,
                 progress: Callable[[str], None] | None = None) -> str:
    from kvmctx import api

    say = progress or (lambda _m: None)
    knobs = dict(knobs or {})

    def run(pol: str, extra: dict[str, Any] | None = None, n: int | None = None) -> Any:
        kk = {**knobs, **(extra or {})}
        if trace is not None:
            return api.run_trace(trace, pol, seed=seed, knobs=kk, cost_profile=cost_profile,
                                 scenario=scenario, events=-1 if n is None else n)
        return api.run(pol, scenario, seed=seed, events=events if n is None else n,
                       knobs=kk, cost_profile=cost_profile)

    results = []
    for pol in policies:
        say(f"running {pol}")
        results.append(run(pol))
    if api.ORACLE not in policies:
        say("running the oracle")
        results.append(run(api.ORACLE))
    oracle = next(r for r in results if r.policy == api.ORACLE)
    low = oracle.cycles()["total"]
    first = results[0]
    where = first.scenario
    body: list[str] = []

    # -- comparison
    rows, classes = [], []
    for r in results:
        mt = r.metrics()
        cyc = r.cycles()["total"]
        rows.append([r.policy, mt["fp_traps"], mt["saves"], mt["restores"],
                     mt["bytes_saved"] + mt["bytes_restored"], round(cyc),
                     round(cyc / max(1, mt["guest_exits"]), 1),
                     f"{100 * (cyc - low) / low:.0f}%" if low else "-", mt["violations"]])
        classes.append("bad" if mt["violations"] else "")
    body.append("<h2>Comparison</h2>")
    body.append(table(["policy", "FP traps", "saves", "restores", "bytes moved", "cycles",
                       "cycles/exit", "above oracle", "violations"], rows, classes=classes))
    bad = [r for r in results if r.metrics()["violations"]]
    for r in bad:
        ex = r.sim.violation_records[:1]
        if ex:
            body.append(f"<p class='bad'>{esc(r.policy)}: {r.metrics()['violations']} "
                        f"invariant violation(s); first: [{esc(ex[0]['invariant'])}] "
                        f"{esc(ex[0]['message'])}. Run <code>kvmctx check -p "
                        f"{esc(r.policy)}</code> for the shortest counterexample.</p>")
    body.append("<h2>Cost breakdown</h2>" + _breakdown_plot(results))
    body.append("<h2>Per 1,000 exits</h2>" + _per_exit_plot(results))

    # -- predictors
    say("predictor accuracy")
    try:
        if trace is not None:
            prows = _trace_predictors(trace, seed, knobs, cost_profile, scenario)
        else:
            prows = api.predictor_table(scenario, seed, events, knobs, cost_profile)
    except api.UsageError as e:
        prows = []
        body.append(f"<p>Predictors not run: {esc(e)}</p>")
    if prows:
        body.append("<h2>Eager-restore predictors</h2>" + _predictor_plot(prows))
        body.append(table(["predictor", "TP", "FP", "TN", "FN", "accuracy", "precision",
                           "recall", "cycles", "net vs lazy", "gap to perfect",
                           "gap to oracle"],
                          [[r["predictor"], r.get("tp"), r.get("fp"), r.get("tn"), r.get("fn"),
                            r.get("accuracy"), r.get("precision"), r.get("recall"),
                            r.get("cycles"), r.get("net_vs_lazy"), r.get("gap_to_perfect"),
                            r.get("gap_to_oracle")] for r in prows]))

    # -- vector length
    has_sve = any(t.sve for t in first.workload.tasks) or any(v.sve for v in
                                                              first.workload.vcpus)
    body.append("<h2>Vector length</h2>")
    if has_sve:
        curves: dict[str, list[tuple[int, float]]] = {}
        n = min(events, 10_000) if trace is None else None
        for pol in policies:
            if pol == api.ORACLE:
                continue
            say(f"vector lengths: {pol}")
            pts = []
            label = pol
            for vl in VLS:
                try:
                    rr = run(pol, {"vl": vl}, n)
                except api.UsageError:
                    break
                pts.append((vl, rr.cycles()["total"]))
                if any("FPSIMD-only" in a for a in rr.assumptions):
                    label = f"{pol} (SVE run FPSIMD-only: design predates it)"
            if pts:
                curves[label] = pts
        if curves:
            body.append(_vl_plot(curves))
        else:
            body.append("<p>No policy here models SVE.</p>")
    else:
        body.append("<p>The workload has no SVE task or vCPU; the vector length does not "
                    "change its cost.</p>")

    # -- assumptions and sources
    body.append("<h2>Assumptions</h2><ul>" + "".join(
        f"<li>{esc(a)}</li>" for a in first.assumptions) + "</ul>")
    prof = first.profile
    body.append(f"<h2>Cost profile: {esc(prof.name)}</h2>")
    body.append(table(["cost", "value", "unit", "how sure", "source"],
                      [[k, c.value, c.unit, MARK_WORDS.get(c.mark, c.mark), c.source]
                       for k, c in prof.costs.items()], left=1))
    sub = (f"{where}, seed {seed}, {results[0].events:,} events, cost profile {prof.name}"
           + (f", knobs {', '.join(f'{k}={v}' for k, v in knobs.items())}" if knobs else ""))
    return page(f"kvmctx report: {', '.join(policies)}", sub, body)


def _trace_predictors(trace: Any, seed: int, knobs: dict[str, Any], cost_profile: Any,
                      scenario: str) -> list[dict[str, Any]]:
    """The predictor table on a trace (same columns as api.predictor_table)."""
    from kvmctx import api

    base = api.run_trace(trace, api.ORACLE_REFERENCE, seed=seed, knobs=knobs,
                         cost_profile=cost_profile, scenario=scenario)
    oracle = api.run_trace(trace, api.ORACLE, seed=seed, knobs=knobs,
                           cost_profile=cost_profile, scenario=scenario)
    prof = base.profile
    rows = []
    perfect = None
    for kind in api.PREDICTORS:
        sims: list[Any] = []
        r = api.run_trace(trace, f"eager-{kind}", seed=seed, knobs=knobs,
                          cost_profile=cost_profile, scenario=scenario, sim_out=sims)
        cf = sims[0].confusion
        tp, fp = cf[(True, True)], cf[(True, False)]
        fn, tn = cf[(False, True)], cf[(False, False)]
        n = tp + fp + fn + tn
        cyc = r.cycles()["total"]
        if kind == "perfect":
            perfect = cyc
        rows.append({"predictor": kind, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
                     "predictions": n,
                     "accuracy": round((tp + tn) / n, 4) if n else None,
                     "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                     "recall": round(tp / (tp + fn), 4) if tp + fn else None,
                     "cycles": round(cyc), "cycles_saved": round(tp * prof["guest_fp_trap"]),
                     "net_vs_lazy": round(base.cycles()["total"] - cyc)})
    for row in rows:
        row["gap_to_perfect"] = round(row["cycles"] - (perfect or 0))
        row["gap_to_oracle"] = round(row["cycles"] - oracle.cycles()["total"])
    return rows
