"""`kvmctx sweep-report`: a sweep's rows as tables and plots with confidence
intervals over seeds (polars for the grouping, matplotlib for the plots)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from kvmctx.io.html import esc, figure_png, page, table

# Two-sided 95% Student t critical values by degrees of freedom (1..30); normal beyond.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t95(n: int) -> float:
    if n < 2:
        return float("nan")
    return _T95[n - 2] if n - 1 <= len(_T95) else 1.96


PLOT_METRICS = ("cycles", "saves_restores_per_1k_exits", "fp_traps")


def summarize(df: Any, metric: str) -> Any:
    """Mean, sd, n and the 95% CI half-width per (workload, policy, knobs)."""
    import polars as pl

    knob_cols = sorted(c for c in df.columns if c.startswith("knob_"))
    keys = ["scenario", "trace", "policy", *knob_cols]
    ok = df.filter(pl.col("status") == "ok")
    g = (ok.group_by(keys, maintain_order=True)
         .agg(pl.col(metric).cast(pl.Float64).mean().alias("mean"),
              pl.col(metric).cast(pl.Float64).std().alias("sd"),
              pl.len().alias("n")))
    half = [t95(n) * sd / math.sqrt(n) if n > 1 and sd is not None else None
            for n, sd in zip(g["n"].to_list(), g["sd"].to_list(), strict=True)]
    return g.with_columns(pl.Series("ci95", half, dtype=pl.Float64)).sort(keys)


def write_csv(df: Any, path: Path) -> None:
    frames = []
    import polars as pl

    for metric in PLOT_METRICS:
        if metric in df.columns:
            frames.append(summarize(df, metric).with_columns(pl.lit(metric).alias("metric")))
    out = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    out.write_csv(path)


def _plots(df: Any, metric: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(df, metric)
    knob_cols = sorted(c for c in df.columns if c.startswith("knob_"))
    if not len(s):
        return []
    imgs = []
    work = s.select(["scenario", "trace"]).unique(maintain_order=True).rows()
    for sc, tr in work[:6]:
        sub = s.filter((s["scenario"] == sc) & (s["trace"] == tr))
        label = Path(tr).name if tr else sc
        if not knob_cols:
            fig, ax = plt.subplots(figsize=(7, 3.2))
            pols = sub["policy"].to_list()
            ax.bar(pols, sub["mean"].to_list(),
                   yerr=[x or 0 for x in sub["ci95"].to_list()], capsize=4, color="#4c72b0")
            ax.set_ylabel(metric)
            ax.set_title(f"{label}: {metric} (mean, 95% CI over seeds)")
            ax.tick_params(axis="x", rotation=30)
            imgs.append(figure_png(fig))
            continue
        x = knob_cols[0]
        rest = knob_cols[1:]
        facets = sub.select(rest).unique(maintain_order=True).rows() if rest else [()]
        facets = facets[:6]
        fig, axes = plt.subplots(1, len(facets), figsize=(min(16, 4.6 * len(facets)), 3.4),
                                 squeeze=False)
        for ax, fv in zip(axes[0], facets, strict=True):
            part = sub
            for col, val in zip(rest, fv, strict=True):
                part = part.filter(part[col] == val)
            for pol in part["policy"].unique(maintain_order=True).to_list():
                pp = part.filter(part["policy"] == pol).sort(x)
                ax.errorbar(pp[x].to_list(), pp["mean"].to_list(),
                            yerr=[e or 0 for e in pp["ci95"].to_list()], marker="o",
                            capsize=3, label=pol)
            ax.set_xlabel(x.removeprefix("knob_"))
            ax.set_ylabel(metric)
            ttl = ", ".join(f"{c.removeprefix('knob_')}={v}" for c, v in
                            zip(rest, fv, strict=True))
            ax.set_title(f"{label}" + (f" ({ttl})" if ttl else ""), fontsize=9)
            ax.grid(alpha=.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"{metric}: mean and 95% CI over seeds", fontsize=10)
        imgs.append(figure_png(fig))
    return imgs


def render(out_dir: Path, df: Any, spec: dict[str, Any]) -> str:
    import polars as pl

    n = len(df)
    fails = df.filter(pl.col("status") != "ok") if n else df
    body = [f"<p>{n:,} rows from <code>{esc(out_dir)}</code>; policies "
            f"{esc(', '.join(spec.get('policies', [])))}; seeds {len(spec.get('seeds', []))}; "
            f"{esc(spec.get('events'))} events per point; cost profile "
            f"{esc(spec.get('cost_profile'))}; grid "
            f"{esc(', '.join(f'{k}={v}' for k, v in spec.get('grid', {}).items()) or 'none')}"
            f".</p>"]
    if len(fails):
        body.append(f"<p class='bad'>{len(fails)} point(s) failed (violation or error):</p>")
        body.append(table(["policy", "scenario", "seed", "status", "error"],
                          fails.select(["policy", "scenario", "seed", "status", "error"])
                          .head(50).rows(), left=5))
    for metric in PLOT_METRICS:
        if metric not in df.columns:
            continue
        body.append(f"<h2>{esc(metric)}</h2>")
        body += _plots(df, metric)
        s = summarize(df, metric)
        cols = [c for c in s.columns]
        body.append(table([c.removeprefix("knob_") for c in cols], s.head(400).rows(),
                          left=3 + sum(c.startswith("knob_") for c in cols)))
    body.append("<div class='note'>CI: Student t 95% interval of the mean over seeds "
                "(common random numbers: every policy sees the same workload per seed). "
                "Query the rows directly: <code>polars.read_parquet('DIR/shards/*.parquet')"
                "</code>.</div>")
    return page("kvmctx sweep report", f"{out_dir}", body)
