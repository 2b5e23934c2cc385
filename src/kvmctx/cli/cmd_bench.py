"""`kvmctx bench`: simulator, empty-loop floor, SimPy and checker figures."""

from __future__ import annotations

import typer
from rich.table import Table

from kvmctx.cli.common import err, out, print_json


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
        quick: bool = typer.Option(False, "--quick",
                                   help="Well under a minute: 40k events, the checker "
                                        "stopped at 150k states."),
    ) -> None:
        """Measure this machine: simulator events/s (invariants on/off), the
        empty-loop floor, SimPy, checker states/s and memory per state."""
        from kvmctx.engines.bench import run_bench

        def say(msg: str) -> None:
            err.print(f"bench: {msg}", markup=False)

        res = run_bench(quick=quick, progress=say)
        if json_out:
            print_json(res)
            return
        t = Table(title=f"kvmctx bench ({'quick' if quick else 'full'}, Python "
                        f"{res['python']}, {res['machine']})", title_justify="left")
        t.add_column("measure")
        t.add_column("value", justify="right")
        rows = [
            ("simulator events/s, invariants on", f"{res['sim_events_per_s']:,}"),
            ("simulator events/s, invariants off", f"{res['sim_events_per_s_no_invariants']:,}"),
            ("empty-loop floor events/s", f"{res['floor_events_per_s']:,}"),
            ("simulator / floor", f"{res['sim_floor_ratio']:.3f}"),
            ("SimPy events/s (same dispatch)", f"{res['simpy_events_per_s'] or 0:,}"),
            ("simulator / SimPy", f"{res['sim_simpy_ratio'] or 0:.2f}"),
            (f"checker states/s ({res['checker_bounds']}, {res['checker_engine']} engine)",
             f"{res['checker_states_per_s']:,}"),
            ("checker states", f"{res['checker_states']:,}"),
            ("checker RSS MB per million states",
             f"{res['checker_rss_mb_per_million_states']:,}"),
            ("checker bytes per state", f"{res['checker_bytes_per_state']:,}"),
            (f"checker states/s, Python engine (first {res['checker_python_states']:,})",
             f"{res['checker_states_per_s_python']:,}"),
        ]
        if "checker_jobs2_speedup" in res:
            rows += [
                ("checker native / Python, same states",
                 f"{res['checker_native_python_ratio']:.1f}x"),
                ("checker --jobs 2 / --jobs 1", f"{res['checker_jobs2_speedup']:.2f}x"),
            ]
        for pol, d in res["per_policy"].items():
            rows.append((f"{pol}: events/s on / off",
                         f"{d['events_per_s']:,} / {d['events_per_s_no_invariants']:,}"))
        for a, b in rows:
            t.add_row(a, b)
        out.print(t)
