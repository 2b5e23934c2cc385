"""Sweeps: spec validation, backends agree, SIGKILL + resume, lock, failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from kvmctx.engines import sweep as SW

SPEC = """
[sweep]
policies = ["upstream-6.14", "arm64-4.17"]
scenarios = ["default"]
seeds = 2
events = 1500
[grid]
guest_fp = [0.1, 0.9]
vl = {start = 128, stop = 256, step = 128}
"""


def write(tmp: Path, text: str, name: str = "spec.toml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def kvmctx(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvmctx", *args], capture_output=True,
                          text=True, timeout=600, env=env)


def rows(d: Path) -> pl.DataFrame:
    return SW.read_rows(d).sort("point_id")


def test_grid_points_and_ids_are_stable(tmp_path: Path) -> None:
    sp = SW.load_spec(write(tmp_path, SPEC))
    pts = sp.points()
    assert len(pts) == 2 * 2 * 2 * 2
    assert sp.grid["vl"] == [128, 256]
    again = SW.load_spec(write(tmp_path, SPEC, "b.toml")).points()
    assert [p.id for p in pts] == [p.id for p in again]
    assert len({p.id for p in pts}) == len(pts)


def test_local_and_dask_backends_give_identical_rows(tmp_path: Path) -> None:
    sp = SW.load_spec(write(tmp_path, SPEC))
    a = SW.run_sweep(sp, tmp_path / "local", backend="local", workers=2)
    b = SW.run_sweep(sp, tmp_path / "dask", backend="dask", workers=2, dask_processes=False)
    assert a.ran == b.ran == 16 and a.failures == b.failures == 0
    cols = [c for c in rows(tmp_path / "local").columns if c != "seconds"]
    assert rows(tmp_path / "local").select(cols).equals(rows(tmp_path / "dask").select(cols))
    # A rerun finds everything done.
    c = SW.run_sweep(sp, tmp_path / "local", backend="local", workers=1)
    assert c.skipped == 16 and c.ran == 0


def test_sigkill_then_resume_gives_exactly_every_row_once(tmp_path: Path) -> None:
    spec = write(tmp_path, SPEC.replace("seeds = 2", "seeds = 12").replace("1500", "4000"))
    out = tmp_path / "out"
    env = dict(os.environ, KVMCTX_SWEEP_FLUSH_ROWS="3", KVMCTX_SWEEP_FLUSH_SECONDS="0.2")
    proc = subprocess.Popen([sys.executable, "-m", "kvmctx", "sweep", str(spec), "--out",
                             str(out), "--workers", "2"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        shards = list((out / "shards").glob("*.parquet")) if (out / "shards").exists() else []
        if len(shards) >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(SW.read_rows(out))
    total = len(SW.load_spec(spec).points())
    assert 0 < partial < total, "the kill must land mid-sweep"
    r = kvmctx("sweep", str(spec), "--out", str(out), "--workers", "2", "--json", env=env)
    assert r.returncode == 0, r.stderr
    df = SW.read_rows(out)
    assert len(df) == total and df["point_id"].n_unique() == total
    assert not list((out / "shards").glob("*.tmp"))
    # Raw shards hold no duplicate of a finished row either.
    raw = pl.concat([pl.read_parquet(f) for f in (out / "shards").glob("*.parquet")],
                    how="diagonal_relaxed")
    assert len(raw) == total


def test_failures_are_recorded_and_set_the_exit_status(tmp_path: Path) -> None:
    spec = write(tmp_path, """
[sweep]
policies = ["tang-eager-2018", "arm32-vfp-2012", "upstream-6.14"]
seeds = [3]
events = 3000
[grid]
vl = [512]
""")
    r = kvmctx("sweep", str(spec), "--out", str(tmp_path / "o"), "--workers", "1", "--json")
    assert r.returncode == 1, r.stderr
    df = SW.read_rows(tmp_path / "o")
    st = dict(zip(df["policy"].to_list(), df["status"].to_list(), strict=True))
    assert st == {"tang-eager-2018": "violation", "arm32-vfp-2012": "error",
                  "upstream-6.14": "ok"}
    err = df.filter(pl.col("policy") == "arm32-vfp-2012")["error"][0]
    assert "UsageError" in err and "sve" in err


@pytest.mark.parametrize("text,needle", [
    ("[sweep]\npolicies = ['nope']\n", "sweep.policies: unknown policy 'nope'"),
    ("[sweep]\npolicies = ['pkvm']\nspeed = 3\n", "unknown key sweep.speed"),
    ("[sweep]\npolicies = ['pkvm']\n[grid]\nwarp = [1]\n", "unknown grid key grid.warp"),
    ("[sweep]\npolicies = ['pkvm']\n[grid]\nguest_fp = [2.0]\n", "grid.guest_fp"),
    ("[sweep]\npolicies = ['pkvm']\nseeds = -1\n", "sweep.seeds"),
    ("[sweep]\npolicies = ['pkvm']\nseeds = [3, 1, 3]\n", "seed 3 is listed twice"),
    ("[sweep]\npolicies = ['pkvm']\n[grid]\ncpus = [2.5]\n", "2.5 is not an integer"),
    ("[sweep]\npolicies = ['pkvm']\nevents = 'many'\n", "sweep.events"),
    ("[sweep]\npolicies = ['pkvm']\n[grid]\nvl = {start = 1}\n", "grid.vl"),
    ("[grid]\nvl = [128]\n", "missing [sweep]"),
    ("not toml = = =", "not valid TOML"),
    ("[sweep]\npolicies = ['pkvm']\ncost_profile = 'nope.toml'\n", "sweep.cost_profile"),
])
def test_bad_specs_are_one_line_errors_naming_the_key(tmp_path: Path, text: str,
                                                      needle: str) -> None:
    spec = write(tmp_path, text)
    r = kvmctx("sweep", str(spec), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1


def test_lock_and_spec_mismatch(tmp_path: Path) -> None:
    out = tmp_path / "o"
    sp = SW.load_spec(write(tmp_path, SPEC))
    with SW.locked(out), pytest.raises(SW.SpecError, match="locked"):
        SW.run_sweep(sp, out, workers=1)
    SW.run_sweep(sp, out, workers=1)
    other = SW.load_spec(write(tmp_path, SPEC.replace("seeds = 2", "seeds = 3"), "o.toml"))
    with pytest.raises(SW.SpecError, match="different spec"):
        SW.run_sweep(other, out, workers=1)


def test_sweep_report_html_and_csv(tmp_path: Path) -> None:
    sp = SW.load_spec(write(tmp_path, SPEC))
    SW.run_sweep(sp, tmp_path / "o", workers=2)
    r = kvmctx("sweep-report", str(tmp_path / "o"), "-o", str(tmp_path / "r.html"), "--csv",
               str(tmp_path / "r.csv"))
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "r.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "upstream-6.14" in html
    csv = pl.read_csv(tmp_path / "r.csv")
    assert {"mean", "ci95", "n", "metric"} <= set(csv.columns)
    assert (csv["n"] == 2).all()
