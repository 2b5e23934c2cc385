"""`kvmctx validate-real`: real KVM/arm64 under QEMU against kvmctx's prediction."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from kvmctx.cli.common import err, fail, out, print_json


def register(app: typer.Typer) -> None:
    @app.command("validate-real")
    def validate_real(
        kernel: list[str] = typer.Option(["6.1"], "--kernel", help="6.1, 6.12 (Debian arm64 "
                                         "kernels) or a PATH to an arm64 Image or .deb; "
                                         "repeat for several."),
        mode: list[str] = typer.Option(["vhe"], "--mode", help="vhe, nvhe, protected or all; "
                                       "repeat for several."),
        scenarios: str | None = typer.Option(None, help="Comma list (default: all)."),
        quick: bool = typer.Option(False, "--quick", help="Kernel 6.1, VHE, three "
                                   "deterministic scenarios."),
        keep: Path | None = typer.Option(None, help="Keep traces, the exception log and the "
                                         "console output here."),
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """Boot real Linux KVM under QEMU, run guest scenarios, count the guest's FP
        traps in the emulator's exception log, and compare with kvmctx's prediction
        from the captured ftrace."""
        from kvmctx.validation import runner as R

        modes = list(R.MODES) if "all" in mode else mode
        names = [s.strip() for s in scenarios.split(",")] if scenarios else None
        kernels = kernel
        if quick:
            kernels, modes, names = ["6.1"], ["vhe"], list(R.QUICK)

        def say(msg: str) -> None:
            err.print(f"validate: {msg}", markup=False)

        rows = []
        try:
            for k in kernels:
                rows += R.validate(k, modes, names, keep, say)
        except R.ValidationError as e:
            fail(str(e))
        if json_out:
            print_json([r.as_dict() for r in rows])
        else:
            t = Table(title="real KVM (QEMU) vs kvmctx: guest FP/SVE traps",
                      title_justify="left")
            for c in ("scenario", "kernel", "mode", "policy", "real", "predicted", "error %",
                      "status"):
                t.add_column(c, justify="right" if c in ("real", "predicted", "error %")
                             else "left")
            for r in rows:
                t.add_row(r.scenario, r.kernel, r.mode, r.policy, str(r.real), str(r.predicted),
                          "" if r.error_pct is None else f"{r.error_pct:.1f}",
                          r.status + ("" if r.deterministic else " (±5%)"))
            out.print(t)
            for r in rows:
                if r.status != "ok":
                    out.print(f"{r.scenario} {r.kernel} {r.mode}: {r.detail}", markup=False)
        if any(r.status != "ok" for r in rows):
            raise typer.Exit(1)
