"""`kvmctx sweep` and `kvmctx sweep-report`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from kvmctx.cli.common import err, fail, out, print_json


def register(app: typer.Typer) -> None:
    @app.command()
    def sweep(
        spec: Path = typer.Argument(..., help="Sweep spec (TOML): [sweep] and [grid]."),
        out_dir: Path = typer.Option(..., "--out", "-o", help="Result directory (resumable)."),
        backend: str = typer.Option("local", help="local (process pool) or dask."),
        address: str | None = typer.Option(None, help="Dask scheduler address (tcp://...); "
                                                      "without it a LocalCluster is started."),
        workers: int = typer.Option(0, help="Workers (0: all cores)."),
        json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Run every point of a parameter grid; rerun on the same --out to resume."""
        from kvmctx.engines import sweep as SW

        if workers < 0:
            fail("--workers must be >= 0")
        if address and backend != "dask":
            fail("--address is for --backend dask")
        try:
            sp = SW.load_spec(spec)
        except SW.SpecError as e:
            fail(str(e))
        show = err.is_terminal and not json_out
        prog = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]} points/s"), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=err, disable=not show)
        task = prog.add_task("sweep", total=1, rate="-")
        t_start = [0.0, 0]

        def upd(done: int, total: int) -> None:
            import time

            now = time.perf_counter()
            if not t_start[0]:
                t_start[0], t_start[1] = now, done
            rate = (done - t_start[1]) / (now - t_start[0]) if now > t_start[0] else 0.0
            prog.update(task, completed=done, total=total, rate=f"{rate:.1f}")

        try:
            with prog:
                res = SW.run_sweep(sp, out_dir, backend=backend, workers=workers,
                                   address=address, progress=upd)
        except SW.SpecError as e:
            fail(str(e))
        summary = {"out": str(out_dir), "backend": res.backend, "workers": res.workers,
                   "points": res.total, "already_done": res.skipped, "ran": res.ran,
                   "failures": res.failures, "seconds": round(res.seconds, 2),
                   "points_per_s": round(res.points_per_s, 2), "failed": res.failed}
        if json_out:
            print_json(summary)
        else:
            out.print(f"sweep {out_dir}: {res.total:,} points ({res.skipped:,} already done, "
                      f"{res.ran:,} run) on {res.backend} with {res.workers} worker(s) in "
                      f"{res.seconds:.1f} s, {res.points_per_s:.1f} points/s; failures "
                      f"{res.failures}", markup=False)
            for f in res.failed[:5]:
                out.print(f"  failed: {f['policy']} {f['scenario']} seed {f['seed']}: "
                          f"{f['status']}: {f['error']}", markup=False)
        if res.failures:
            raise typer.Exit(1)

    @app.command("sweep-report")
    def sweep_report(
        out_dir: Path = typer.Argument(..., help="A sweep's --out directory."),
        output: Path = typer.Option(Path("sweep.html"), "-o", "--output", help="HTML file."),
        csv: Path | None = typer.Option(None, "--csv", help="Also write the summary as CSV."),
    ) -> None:
        """Tables and plots across the grid, with 95% confidence intervals over seeds."""
        from kvmctx.engines import sweep as SW
        from kvmctx.io import sweep_report as R
        from kvmctx.io.html import write_atomic

        spec_file = out_dir / SW.SPEC_FILE
        if not spec_file.is_file():
            fail(f"{out_dir}: not a sweep directory (no {SW.SPEC_FILE})")
        try:
            spec = json.loads(spec_file.read_text())
            df = SW.read_rows(out_dir)
        except (OSError, ValueError) as e:
            fail(f"{out_dir}: cannot read the sweep: {e}")
        if not len(df):
            fail(f"{out_dir}: no finished points yet")
        try:
            write_atomic(output, R.render(out_dir, df, spec))
            if csv is not None:
                R.write_csv(df, csv)
        except OSError as e:
            fail(f"cannot write: {e.strerror or e}")
        out.print(f"wrote {output} ({len(df):,} rows)" + (f" and {csv}" if csv else ""),
                  markup=False)
