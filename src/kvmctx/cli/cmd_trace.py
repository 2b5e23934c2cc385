"""`kvmctx import-trace` and `kvmctx synth-trace`: real traces in, workloads out."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from kvmctx import api
from kvmctx.cli.common import err, fail, out, print_json


def register(app: typer.Typer) -> None:
    @app.command("import-trace")
    def import_trace(
        file: Path = typer.Argument(..., help="`trace-cmd report` or tracefs text."),
        output: Path | None = typer.Option(None, "-o", "--output",
                                           help="Write the workload as Parquet (for "
                                                "`run --trace`, sweeps and reports)."),
        json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Read a trace: per-vCPU run segments, exits by reason, scheduling,
        migrations, and what was skipped (with line numbers)."""
        from kvmctx.io.trace import TraceFormatError

        if not json_out:
            err.print(f"reading {file} ...", markup=False)
        tw = _load(file)
        if output is not None:
            if output.suffix != ".parquet":
                fail(f"{output}: the workload is written as Parquet; name it *.parquet")
            try:
                tw.to_parquet(output)
            except (OSError, TraceFormatError) as e:
                fail(f"cannot write {output}: {getattr(e, 'strerror', None) or e}")
        s = tw.summary()
        if json_out:
            print_json(s)
            return
        out.print(f"[bold]{file}[/bold]: {s['lines']:,} lines, {s['events']:,} events on "
                  f"{s['cpus']} CPUs, {s['threads']} threads, {s['migrations']} migrations")
        t = Table(title="vCPU threads", title_justify="left")
        for col in ("vcpu", "thread", "pid", "run segments", "exits to VMM", "exits by reason",
                    "time in guest"):
            t.add_column(col)
        for v in s["vcpus"]:
            reasons = ", ".join(f"{k} {n}" for k, n in v["exits_by_reason"].items())
            t.add_row(str(v["vcpu"]), v["comm"], str(v["pid"]), f"{v['segments']:,}",
                      f"{v['exits_to_user']:,}", reasons, f"{v['guest_time_ns'] / 1e6:.3f} ms")
        out.print(t)
        skipped = sum(s["skipped"].values())
        out.print(f"skipped {skipped} line(s)" + (": " + "; ".join(
            f"{r} {n} (e.g. line {', '.join(map(str, s['skipped_examples'].get(r, [])))})"
            for r, n in s["skipped"].items()) if skipped else ""), markup=False)
        if s["lost_events"] or s["late"] or s["replaced_chars"]:
            out.print(f"lost-event markers {s['lost_events']}, lines out of order beyond the "
                      f"reorder window {s['late']}, invalid UTF-8 characters replaced "
                      f"{s['replaced_chars']}", markup=False)
        if s["ignored"]:
            out.print("other events (not used): " + ", ".join(
                f"{k} {n}" for k, n in list(s["ignored"].items())[:8]), markup=False)
        out.print("note: guest FP use is not in a trace; `kvmctx run --trace` combines the "
                  "trace with --guest-fp (the scenario's value by default).", markup=False)
        if output is not None:
            out.print(f"wrote {output}", markup=False)

    @app.command("synth-trace")
    def synth_trace(
        output: Path = typer.Option(..., "-o", "--output", help="Trace text file to write."),
        events: int = typer.Option(1000, help="About this many event lines."),
        cpus: int = typer.Option(2),
        vcpus: int = typer.Option(2),
        seed: int = typer.Option(0),
        style: str = typer.Option("qemu", help="qemu ('CPU 0/KVM') or kvmtool ('kvm-vcpu-0')."),
    ) -> None:
        """Write a synthetic trace in `trace-cmd report` format (for trying things)."""
        from kvmctx.io.trace_synth import write_synth

        if style not in ("qemu", "kvmtool"):
            fail(f"--style must be qemu or kvmtool, got {style!r}")
        if events < 1 or cpus < 1 or vcpus < 1 or cpus > 64 or vcpus > 64:
            fail("--events, --cpus and --vcpus must be positive (cpus, vcpus <= 64)")
        if output.exists():
            fail(f"{output} exists; not overwriting it")
        try:
            n = write_synth(str(output), events=events, cpus=cpus, vcpus=vcpus, seed=seed,
                            style=style)
        except OSError as e:
            fail(f"cannot write {output}: {e.strerror or e}")
        out.print(f"wrote {output}: {n:,} lines", markup=False)


def _load(file: Path):  # noqa: ANN202 - a TraceWorkload
    try:
        return api.load_trace(str(file))
    except api.UsageError as e:
        fail(str(e))
