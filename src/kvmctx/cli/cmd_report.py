"""`kvmctx report` (HTML) and `kvmctx timeline` (Perfetto/Chrome trace JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from kvmctx import api
from kvmctx.cli.common import err, fail, out


def _trace(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return api.load_trace(str(path))
    except api.UsageError as e:
        fail(str(e))


def _knobs(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        policies: str = typer.Option("upstream-6.14,arm64-4.17,tang-eager-2018-hyp",
                                     "--policies", help="Comma-separated policy names."),
        scenario: str = typer.Option("default", "--scenario", "-s"),
        trace: Path | None = typer.Option(None, "--trace", "-t",
                                          help="A trace-cmd report file (or imported .parquet)."),
        seed: int = typer.Option(0),
        events: int = typer.Option(20_000, help="Events per run (scenarios)."),
        guest_fp: float | None = typer.Option(None),
        vl: int | None = typer.Option(None),
        exit_user: float | None = typer.Option(None),
        cost_profile: str | None = typer.Option(None),
        output: Path = typer.Option(Path("report.html"), "-o", "--output"),
    ) -> None:
        """One self-contained HTML page: comparison, cost breakdown, per-exit counts,
        predictor accuracy, vector-length sensitivity, assumptions and sources."""
        from kvmctx.io.html import write_atomic
        from kvmctx.io.report import build_report

        names = [n.strip() for n in policies.split(",") if n.strip()]
        if not names:
            fail("--policies is empty")
        valid = api.policy_names()
        for n in names:
            if n not in valid:
                fail(f"unknown policy {n!r}; valid: {', '.join(valid)}")
        if events <= 0 or seed < 0:
            fail("--events must be positive and --seed >= 0")
        try:
            api.resolve_workload(scenario)
        except api.UsageError as e:
            fail(str(e))
        tw = _trace(trace)

        def say(msg: str) -> None:
            err.print(f"report: {msg}", markup=False)

        try:
            html = build_report(names, scenario, seed, events,
                                _knobs(guest_fp=guest_fp, vl=vl, exit_user=exit_user),
                                cost_profile, tw, progress=say)
        except api.UsageError as e:
            fail(str(e))
        try:
            write_atomic(output, html)
        except OSError as e:
            fail(f"cannot write {output}: {e.strerror or e}")
        out.print(f"wrote {output} ({len(html) // 1024} KiB); open it in a browser",
                  markup=False)

    @app.command()
    def timeline(
        policy: str = typer.Option("upstream-6.14", "--policy", "-p"),
        scenario: str = typer.Option("default", "--scenario", "-s"),
        trace: Path | None = typer.Option(None, "--trace", "-t"),
        seed: int = typer.Option(0),
        events: int = typer.Option(5_000, help="Events (with --trace: -1 for all)."),
        guest_fp: float | None = typer.Option(None),
        output: Path = typer.Option(Path("timeline.json"), "-o", "--output"),
    ) -> None:
        """Chrome trace-event JSON for the Perfetto UI: per CPU, whose FP state the
        registers hold and what runs, with traps, saves, restores and violations."""
        from kvmctx.io.timeline import build_timeline, write_timeline

        if policy not in api.policy_names() or policy == api.ORACLE:
            fail(f"unknown policy {policy!r} (the oracle has no timeline); valid: "
                 f"{', '.join(api.policy_names()[:-1])}")
        if seed < 0 or (events <= 0 and trace is None) or events == 0:
            fail("--events must be positive (or -1 with --trace) and --seed >= 0")
        try:
            api.resolve_workload(scenario)
        except api.UsageError as e:
            fail(str(e))
        tw = _trace(trace)
        try:
            obj = build_timeline(policy, scenario, seed, events,
                                 _knobs(guest_fp=guest_fp), tw)
        except api.UsageError as e:
            fail(str(e))
        try:
            write_timeline(obj, output)
        except OSError as e:
            fail(f"cannot write {output}: {e.strerror or e}")
        n = len(obj["traceEvents"])
        out.print(f"wrote {output}: {n:,} trace events; open it at https://ui.perfetto.dev "
                  "(Open trace file)", markup=False)
