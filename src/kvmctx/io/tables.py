"""Result rows as tables (polars): CSV and Parquet outputs of run/compare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl


def result_row(r: Any) -> dict[str, Any]:
    """One flat row of a RunResult: identifiers, metrics, counters, cycles."""
    j = r.as_json()
    row: dict[str, Any] = {"policy": j["policy"], "scenario": j["scenario"], "seed": j["seed"],
                           "events": j["events"], "cost_profile": j["cost_profile"]}
    row.update(j["metrics"])
    row.update({f"derived_{k}": v for k, v in j["derived"].items()})
    row.update({f"cycles_{k}": v for k, v in j["cycles_breakdown"].items()})
    row.update({f"n_{k}": v for k, v in j["counters"].items()})
    return row


def results_frame(results: list[Any]) -> pl.DataFrame:
    return pl.DataFrame([result_row(r) for r in results])


def write_frame(frame: pl.DataFrame, path: str | Path, fmt: str) -> None:
    p = Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    if fmt == "csv":
        frame.write_csv(tmp)
    elif fmt == "parquet":
        frame.write_parquet(tmp)
    else:
        raise ValueError(f"unknown table format {fmt!r}")
    tmp.replace(p)
