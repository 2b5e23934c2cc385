"""The ``kvmctx`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from kvmctx import __version__, api
from kvmctx import policies as P
from kvmctx.cli.common import err, fail, out, print_json, progress_bar
from kvmctx.workloads import scenarios as S

app = typer.Typer(
    name="kvmctx",
    help="Model, price and check lazy FP/SIMD/SVE context switching between host tasks "
         "and KVM guests on Arm.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

METRIC_COLUMNS = ("fp_traps", "saves", "restores", "bytes_saved", "bytes_restored",
                  "guest_exits", "cycles", "violations")


def _version(value: bool) -> None:
    if value:
        out.print(f"kvmctx {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """kvmctx: every lazy FP switching design is a small protocol; check it and price it."""


def _knobs(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _run_one(policy: str, scenario: str, seed: int, events: int | None, knobs: dict[str, Any],
             cost_profile: str | None, invariants: bool, show_progress: bool,
             trace: Any = None) -> api.RunResult:
    if trace is not None:
        total = trace.events if events is None else min(events, trace.events)
        with progress_bar(f"{policy} on {Path(trace.source).name}", total,
                          show_progress) as upd:
            return api.run_trace(trace, policy, seed=seed, knobs=knobs,
                                 cost_profile=cost_profile, scenario=scenario,
                                 events=-1 if events is None else events,
                                 invariants=invariants, progress=upd)
    n = 100_000 if events is None else events
    with progress_bar(f"{policy} on {scenario}", n, show_progress) as upd:
        return api.run(policy, scenario, seed=seed, events=n, knobs=knobs,
                       cost_profile=cost_profile, invariants=invariants, progress=upd)


TRACE_HELP = ("A `trace-cmd report` text file (or a workload .parquet from import-trace): "
              "its schedule and exits drive the run; --scenario supplies the FP use.")


def _load_trace(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        with progress_bar(f"reading {path.name}", 0, False):
            return api.load_trace(str(path))
    except api.UsageError as e:
        fail(str(e))


def _metrics_table(results: list[api.RunResult], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("policy")
    for col in METRIC_COLUMNS:
        t.add_column(col.replace("_", " "), justify="right")
    t.add_column("saves+restores /1k exits", justify="right")
    for r in results:
        mt = r.metrics()
        row = [r.policy] + [f"{mt[c]:,}" for c in METRIC_COLUMNS]
        row.append(f"{r.as_json()['derived']['saves_restores_per_1k_exits']:,.0f}"
                   if mt["guest_exits"] else "-")   # no guest: per-exit rates say nothing
        t.add_row(*row)
    return t


def _reading(results: list[api.RunResult], scenario: str) -> str:
    if len(results) < 2:
        return ""
    a, b = results[0], results[1]
    sa = a.metrics()["saves"] + a.metrics()["restores"]
    sb = b.metrics()["saves"] + b.metrics()["restores"]
    ca, cb = a.metrics()["cycles"], b.metrics()["cycles"]
    if sb == 0 and sa == 0:
        return "Reading: neither policy saved or restored anything on this workload."
    if sa <= sb:
        pct = 100 * (sb - sa) / max(1, sb)
        word, who, other = "fewer", a.policy, b.policy
    else:
        pct = 100 * (sa - sb) / max(1, sa)
        word, who, other = "fewer", b.policy, a.policy
    cyc = "cheaper" if (ca <= cb) == (who == a.policy) else "dearer"
    viol = ", ".join(f"{r.policy}={r.metrics()['violations']}" for r in results)
    return (f"Reading: on {scenario}, {who} does {pct:.0f}% {word} saves+restores than "
            f"{other} and is {cyc} in FP-switching cycles; violations: {viol}.")


@app.command()
def demo(
    events: int = typer.Option(50_000, help="Events per policy."),
    seed: int = typer.Option(1, help="Random seed."),
) -> None:
    """Run the default scenario under upstream-6.14 and arm64-4.17, side by side."""
    if events <= 0:
        fail("--events must be positive")
    sc = S.get("default")
    out.print(f"[bold]kvmctx demo[/bold]: scenario [cyan]default[/cyan]: {sc.summary}")
    results = []
    for pol in ("upstream-6.14", "arm64-4.17"):
        try:
            results.append(_run_one(pol, "default", seed, events, {}, None, True, True))
        except api.UsageError as e:
            fail(str(e))
    out.print(_metrics_table(results, f"default, seed {seed}, {events:,} events each "
                                      f"(cost profile {results[0].profile.name})"))
    out.print(_reading(results, "default"))
    if any(r.metrics()["violations"] for r in results):
        raise typer.Exit(1)


KNOB_HELP = "Workload knob (overrides the scenario's value)."


@app.command()
def run(
    policy: str = typer.Option("upstream-6.14", "--policy", "-p", help="Policy name."),
    scenario: str = typer.Option("default", "--scenario", "-s", help="Scenario name."),
    seed: int = typer.Option(0, help="Random seed (same seed, same output)."),
    events: int | None = typer.Option(None, help="Number of simulated events (default "
                                                 "100000; with --trace, the whole trace)."),
    trace: Path | None = typer.Option(None, "--trace", "-t", help=TRACE_HELP),
    guest_fp: float | None = typer.Option(None, help="Chance a guest run segment uses FP."),
    cpus: int | None = typer.Option(None, help="Number of CPUs."),
    vl: int | None = typer.Option(None, help="SVE vector length (bits) of SVE tasks/vCPUs."),
    svl: int | None = typer.Option(None, help="Streaming vector length (bits) of SME tasks."),
    vmm_sve: float | None = typer.Option(None, help="Chance a VMM FP use at EL0 is SVE "
                                                    "(makes the VMM threads SVE tasks)."),
    vcpus: int | None = typer.Option(None, help="Number of vCPUs."),
    guest_aarch32: bool = typer.Option(False, "--guest-aarch32",
                                       help="AArch32 guests (FPEXC32_EL2 in their FP state)."),
    softirq_neon: float | None = typer.Option(None, help=KNOB_HELP),
    preempt: float | None = typer.Option(None, help=KNOB_HELP),
    migrate: float | None = typer.Option(None, help=KNOB_HELP),
    exit_user: float | None = typer.Option(None, help="Fraction of exits that go to the VMM."),
    guest_fp_pattern: str | None = typer.Option(None, help="bernoulli, bursty or phased."),
    sysregs: str | None = typer.Option(None, help="EL1/EL0 sysreg switching: eager, deferred "
                                                  "or deferred-stale (seed 001)."),
    nvhe: bool = typer.Option(False, "--nvhe", help="Model an nVHE host (default VHE)."),
    host_life: float | None = typer.Option(None, help="Chance per host EL0/idle decision of "
                                                      "a signal, ptrace write, execve, CPU "
                                                      "PM or hotplug cycle."),
    vcpu_reset: float | None = typer.Option(None, help="Chance per run-loop top that a PSCI "
                                                       "CPU_ON reset of the vCPU is pending."),
    one_reg: float | None = typer.Option(None, help="Chance the VMM's next ioctl is "
                                                    "KVM_SET_ONE_REG of an FP register."),
    fpmr: float | None = typer.Option(None, help="Chance a host task's FP use writes FPMR."),
    sig_fpsimd: float | None = typer.Option(None, help="Chance per decision of an FPSIMD "
                                                       "task at EL0 of a signal (or, in its "
                                                       "handler, rt_sigreturn)."),
    sig_sve: float | None = typer.Option(None, help="The same for SVE tasks."),
    sig_sme: float | None = typer.Option(None, help="The same for SME tasks."),
    vl_change: float | None = typer.Option(None, help="Chance a host SVE/SME task's syscall "
                                                      "is prctl(PR_SVE/SME_SET_VL)."),
    churn: float | None = typer.Option(None, help="Chance a host task's syscall is clone() "
                                                  "into a free task slot, or exit()."),
    vcpu_respawn: float | None = typer.Option(None, help="Chance per decision of a vCPU "
                                                         "thread at EL0 that it exits; a "
                                                         "host task re-creates it."),
    cost_profile: str | None = typer.Option(None, help="Built-in profile name or TOML path."),
    no_invariants: bool = typer.Option(False, "--no-invariants", help="Skip invariant checks."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    csv: Path | None = typer.Option(None, "--csv", help="Also write the result row as CSV."),
    parquet: Path | None = typer.Option(None, "--parquet", help="Also write it as Parquet."),
) -> None:
    """Simulate one policy on one scenario and print its counts and cost."""
    knobs = _knobs(guest_fp=guest_fp, cpus=cpus, vl=vl, vcpus=vcpus, softirq_neon=softirq_neon,
                   preempt=preempt, migrate=migrate, exit_user=exit_user,
                   guest_fp_pattern=guest_fp_pattern, sysregs=sysregs,
                   vhe=False if nvhe else None, host_life=host_life, svl=svl, vmm_sve=vmm_sve,
                   guest_aarch32=True if guest_aarch32 else None, vcpu_reset=vcpu_reset,
                   one_reg=one_reg, fpmr=fpmr, sig_fpsimd=sig_fpsimd, sig_sve=sig_sve,
                   sig_sme=sig_sme, vl_change=vl_change, churn=churn,
                   vcpu_respawn=vcpu_respawn)
    if events is not None and events < 0:
        fail(f"--events must be >= 0, got {events}")
    if seed < 0:
        fail(f"--seed must be >= 0, got {seed}")
    tw = _load_trace(trace)
    try:
        r = _run_one(policy, scenario, seed, events, knobs, cost_profile, not no_invariants,
                     not json_out, tw)
    except api.UsageError as e:
        fail(str(e))
    _write_tables([r], csv, parquet)
    if json_out:
        print_json(r.as_json())
    else:
        out.print(_metrics_table([r], f"{policy} on {r.scenario}, seed {seed}, "
                                      f"{r.events:,} events"))
        j = r.as_json()
        out.print("cycles by component: " + ", ".join(
            f"{k} {v:,}" for k, v in j["cycles_breakdown"].items()))
        for a in r.assumptions[:3 if tw is not None else 1]:
            out.print(f"assumption: {a}", markup=False)
        if tw is not None and j["trace"]["repairs"]:
            out.print("replay repairs: " + ", ".join(
                f"{k} {v}" for k, v in j["trace"]["repairs"].items()), markup=False)
        for v in r.sim.violation_records[:5]:
            err.print(f"violation at event {v['event']}: [{v['invariant']}] {v['message']}",
                      markup=False)
    if r.metrics()["violations"]:
        raise typer.Exit(1)


def _write_tables(results: list[api.RunResult], csv: Path | None, parquet: Path | None) -> None:
    if csv is None and parquet is None:
        return
    from kvmctx.io.tables import results_frame, write_frame

    frame = results_frame(results)
    for path, fmt in ((csv, "csv"), (parquet, "parquet")):
        if path is not None:
            try:
                write_frame(frame, path, fmt)
            except OSError as e:
                fail(f"cannot write {path}: {e.strerror or e}")


@app.command()
def compare(
    policies: str = typer.Option(",".join(P.names()), "--policies",
                                 help="Comma-separated policy names."),
    scenario: str = typer.Option("default", "--scenario", "-s"),
    seed: int = typer.Option(0),
    events: int | None = typer.Option(None, help="Default 100000; with --trace, all of it."),
    trace: Path | None = typer.Option(None, "--trace", "-t", help=TRACE_HELP),
    guest_fp: float | None = typer.Option(None),
    vl: int | None = typer.Option(None),
    sysregs: str | None = typer.Option(None, help="eager, deferred or deferred-stale."),
    nvhe: bool = typer.Option(False, "--nvhe", help="Model an nVHE host (default VHE)."),
    cost_profile: str | None = typer.Option(None),
    json_out: bool = typer.Option(False, "--json"),
    csv: Path | None = typer.Option(None, "--csv"),
    parquet: Path | None = typer.Option(None, "--parquet"),
) -> None:
    """Run several policies on the same workload (same seed) and compare."""
    names = [n.strip() for n in policies.split(",") if n.strip()]
    if not names:
        fail("--policies is empty")
    knobs = _knobs(guest_fp=guest_fp, vl=vl, sysregs=sysregs, vhe=False if nvhe else None)
    if events is not None and events < 0:
        fail(f"--events must be >= 0, got {events}")
    tw = _load_trace(trace)
    results = []
    for n in names:
        try:
            results.append(_run_one(n, scenario, seed, events, knobs, cost_profile, True,
                                    not json_out, tw))
        except api.UsageError as e:
            fail(str(e))
    _write_tables(results, csv, parquet)
    if json_out:
        print_json([r.as_json() for r in results])
    else:
        where = results[0].scenario if results else scenario
        out.print(_metrics_table(results, f"{where}, seed {seed}, {results[0].events:,} events"))
        out.print(_reading(sorted(results, key=lambda r: r.metrics()["cycles"])[:2], where))
        if tw is not None:
            for a in results[0].assumptions[:3]:
                out.print(f"assumption: {a}", markup=False)
    if any(r.metrics()["violations"] for r in results):
        raise typer.Exit(1)


PREDICTOR_COLUMNS = ("predictor", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall",
                     "cycles_saved", "cycles_lost", "net_vs_lazy", "gap_to_perfect",
                     "gap_to_oracle")


@app.command()
def predictors(
    scenario: str = typer.Option("default", "--scenario", "-s", help="Scenario name."),
    seed: int = typer.Option(0, help="Random seed."),
    events: int = typer.Option(50_000, help="Simulated events per predictor."),
    guest_fp: float | None = typer.Option(None, help="Chance a guest run segment uses FP."),
    guest_fp_pattern: str | None = typer.Option(None, help="bernoulli, bursty or phased."),
    cost_profile: str | None = typer.Option(None, help="Built-in profile name or TOML path."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON list of rows."),
) -> None:
    """Eager-restore predictors on one workload: confusion matrix against what the
    guest did, accuracy, precision/recall, cycles saved and lost, gap to the
    perfect predictor and to the oracle (seed 002's question)."""
    if events < 1:
        fail(f"--events must be >= 1, got {events}")
    if seed < 0:
        fail(f"--seed must be >= 0, got {seed}")
    knobs = _knobs(guest_fp=guest_fp, guest_fp_pattern=guest_fp_pattern)
    try:
        rows = api.predictor_table(scenario, seed=seed, events=events, knobs=knobs,
                                   cost_profile=cost_profile)
    except api.UsageError as e:
        fail(str(e))
    if json_out:
        print_json(rows)
        return
    t = Table(title=f"eager-restore predictors on {scenario}, seed {seed}, {events:,} events")
    for c in PREDICTOR_COLUMNS:
        t.add_column(c.replace("_", " "), justify="left" if c == "predictor" else "right")
    for r in rows:
        t.add_row(*("" if r.get(c) is None else
                    f"{r[c]:,}" if isinstance(r.get(c), int) else str(r[c])
                    for c in PREDICTOR_COLUMNS))
    out.print(t)


@app.command("policies")
def list_policies(json_out: bool = typer.Option(False, "--json")) -> None:
    """List the built-in policies, their sources, and how each differs from its neighbour."""
    rows = [{"name": n, "source": P.get(n).source, "summary": P.get(n).summary,
             "differs": P.get(n).differs, "host": P.get(n).host.era, "arch": P.get(n).arch}
            for n in P.names()]
    rows.append({"name": "oracle", "source": "kvmctx.engines.oracle",
                 "summary": "the least FP save/restore work any safe design can do for the "
                            "workload's sequence of FP uses, knowing the future; no traps",
                 "differs": "a lower bound computed from the workload, not a design",
                 "host": "-", "arch": "-"})
    if json_out:
        print_json(rows)
        return
    t = Table(title="policies", show_lines=True)
    for c in ("name", "source", "summary", "differs"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(r["name"], r["source"], r["summary"], r["differs"])
    out.print(t)


@app.command("scenarios")
def list_scenarios(json_out: bool = typer.Option(False, "--json")) -> None:
    """List the named scenarios and where their numbers come from."""
    rows = [{"name": s.name, "source": s.source, "summary": s.summary,
             "description": s.description} for s in S.SCENARIOS.values()]
    if json_out:
        print_json(rows)
        return
    t = Table(title="scenarios", show_lines=True)
    for c in ("name", "summary", "source"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(r["name"], r["summary"], r["source"])
    out.print(t)


# Commands that live in their own modules register themselves here. A module that
# is not there yet is skipped; any other import error is a bug and is raised.
_PLUGINS = ("cmd_check", "cmd_trace", "cmd_report", "cmd_sweep", "cmd_bench", "cmd_validate")


def _register_plugins() -> None:
    import importlib

    for name in _PLUGINS:
        modname = f"kvmctx.cli.{name}"
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue
            raise
        mod.register(app)


_register_plugins()


def entry() -> None:
    """Console script: usage errors become one line on stderr with exit status 2.

    Matched by class name so it works whether typer bundles click or uses it.
    """
    import sys

    try:
        rv = app(standalone_mode=False)
    except KeyboardInterrupt:
        err.print("kvmctx: interrupted", markup=False)
        sys.exit(130)
    except Exception as e:
        kinds = {c.__name__ for c in type(e).__mro__}
        if "NoArgsIsHelpError" in kinds:
            out.print(e.format_message(), markup=False)  # type: ignore[attr-defined]
            sys.exit(0)
        if "UsageError" in kinds:
            ctx = getattr(e, "ctx", None)
            where = getattr(ctx, "command_path", None) or "kvmctx"
            line = " ".join(e.format_message().split())  # type: ignore[attr-defined]
            err.print(f"kvmctx: error: {where}: {line} (see --help)", markup=False)
            sys.exit(2)
        if "Exit" in kinds and hasattr(e, "exit_code"):
            sys.exit(e.exit_code)
        if "Abort" in kinds:
            err.print("kvmctx: aborted", markup=False)
            sys.exit(130)
        raise
    sys.exit(rv if isinstance(rv, int) else 0)
