"""Sweeps: a parameter grid over policies, workloads and seeds, run anywhere,
resumable, written as Parquet shards.

A *point* is one simulation: (policy, scenario or trace, knob values, seed,
events, cost profile). Its id is a hash of exactly those, so the same spec
gives the same ids everywhere and a rerun knows what is done.

Durability: rows are appended to an in-memory batch as points finish and the
batch is written as one Parquet shard - to a temporary name, fsynced, then
renamed into place - every ``FLUSH_ROWS`` rows or ``FLUSH_SECONDS``. A
rename is atomic, so a sweep killed at any moment (even SIGKILL) leaves
whole shards and at most some ``*.tmp`` files, which a resume deletes; it
loses only the points in flight and the unflushed batch. Reading dedupes by
point id (a point finished twice by two backends is one row). ``.lock``
(flock) keeps a second sweep out of the same directory.

Backends: ``local`` (a process pool on this machine) and ``dask`` (a Dask
distributed cluster at ``--address``, or a LocalCluster started for the run).
Points are deterministic, so every backend gives the same rows.
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import itertools
import json
import math
import os
import time
import tomllib
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLUSH_ROWS = int(os.environ.get("KVMCTX_SWEEP_FLUSH_ROWS", "64"))
FLUSH_SECONDS = float(os.environ.get("KVMCTX_SWEEP_FLUSH_SECONDS", "5"))
SPEC_FILE = "spec.json"
SHARDS = "shards"
BACKENDS = ("local", "dask")


class SpecError(ValueError):
    """A bad sweep spec or directory: one line naming the key."""


@dataclass(frozen=True)
class Point:
    id: str
    policy: str
    scenario: str
    trace: str
    seed: int
    events: int
    profile: str
    knobs: tuple[tuple[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"point_id": self.id, "policy": self.policy, "scenario": self.scenario,
                "trace": self.trace, "seed": self.seed, "events": self.events,
                "cost_profile": self.profile, **{f"knob_{k}": v for k, v in self.knobs}}


@dataclass
class SweepSpec:
    policies: list[str]
    scenarios: list[str]
    traces: list[str]
    seeds: list[int]
    events: int
    cost_profile: str
    metrics: list[str] | None
    grid: dict[str, list[Any]]
    source: str = ""

    def canonical(self) -> dict[str, Any]:
        return {"policies": self.policies, "scenarios": self.scenarios, "traces": self.traces,
                "seeds": self.seeds, "events": self.events, "cost_profile": self.cost_profile,
                "metrics": self.metrics, "grid": self.grid}

    def points(self) -> list[Point]:
        keys = sorted(self.grid)
        combos = list(itertools.product(*(self.grid[k] for k in keys))) if keys else [()]
        work = [(sc, "") for sc in self.scenarios] + [("default", tr) for tr in self.traces]
        out = []
        for (sc, tr), combo, seed, pol in itertools.product(work, combos, self.seeds,
                                                           self.policies):
            knobs = tuple(zip(keys, combo, strict=True))
            key = json.dumps([pol, sc, tr, seed, self.events, self.cost_profile,
                              [list(k) for k in knobs]], sort_keys=True)
            pid = hashlib.sha256(key.encode()).hexdigest()[:20]
            out.append(Point(pid, pol, sc, tr, seed, self.events, self.cost_profile, knobs))
        return out


# ------------------------------------------------------------------ spec


_SWEEP_KEYS = {"policies", "scenarios", "traces", "seeds", "events", "cost_profile",
               "metrics"}


def _range(key: str, r: dict[str, Any]) -> list[Any]:
    extra = set(r) - {"start", "stop", "step"}
    if extra or not {"start", "stop"} <= set(r):
        raise SpecError(f"grid.{key}: a range is {{start=, stop=, step=}} (stop inclusive); "
                        f"got keys {sorted(r)}")
    start, stop = r["start"], r["stop"]
    step = r.get("step", 1)
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
               for x in (start, stop, step)):
        raise SpecError(f"grid.{key}: start, stop and step must be finite numbers")
    if step <= 0:
        raise SpecError(f"grid.{key}: step must be positive")
    span = (stop - start) / step            # inf when a tiny step overflows
    n = int(math.floor(span + 1e-9)) + 1 if math.isfinite(span) else None
    if n is None or n < 1 or n > 10_000:
        raise SpecError(f"grid.{key}: the range has {'too many' if n is None else n} values "
                        "(1..10000 allowed)")
    if all(isinstance(x, int) for x in (start, stop, step)):
        return [start + i * step for i in range(n)]
    return [round(start + i * step, 10) for i in range(n)]


def parse_spec(data: dict[str, Any], source: str = "<spec>") -> SweepSpec:
    from kvmctx import api
    from kvmctx.workloads import scenarios as S
    from kvmctx.workloads.workload import KNOBS, validate_knob

    if not isinstance(data, dict):
        raise SpecError(f"{source}: not a table")
    unknown = set(data) - {"sweep", "grid"}
    if unknown:
        raise SpecError(f"{source}: unknown section(s) {sorted(unknown)}; valid: sweep, grid")
    sw = data.get("sweep")
    if not isinstance(sw, dict):
        raise SpecError(f"{source}: missing [sweep] table")
    bad = set(sw) - _SWEEP_KEYS
    if bad:
        raise SpecError(f"{source}: unknown key sweep.{sorted(bad)[0]}; valid: "
                        f"{', '.join(sorted(_SWEEP_KEYS))}")

    def strlist(key: str, required: bool) -> list[str]:
        v = sw.get(key, [] if not required else None)
        if v is None:
            raise SpecError(f"{source}: sweep.{key} is required")
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise SpecError(f"{source}: sweep.{key} must be a list of names")
        return list(dict.fromkeys(v))

    policies = strlist("policies", True)
    if not policies:
        raise SpecError(f"{source}: sweep.policies is empty")
    valid = api.policy_names()
    for p in policies:
        if p not in valid:
            raise SpecError(f"{source}: sweep.policies: unknown policy {p!r}")
    scenarios = strlist("scenarios", False)
    for sc in scenarios:
        if sc not in S.SCENARIOS:
            raise SpecError(f"{source}: sweep.scenarios: unknown scenario {sc!r}; valid: "
                            f"{', '.join(S.SCENARIOS)}")
    traces = strlist("traces", False)
    base = Path(source).parent if source != "<spec>" else Path(".")
    for i, t in enumerate(traces):
        try:
            traces[i] = t = str((base / t).resolve()) if not Path(t).is_absolute() else t
            found = Path(t).is_file()
        except (OSError, ValueError) as e:   # a NUL byte, a name too long...
            raise SpecError(f"{source}: sweep.traces: {t[:80]!r}: {e.strerror or e}"
                            if isinstance(e, OSError) else
                            f"{source}: sweep.traces: {t[:80]!r}: {e}") from None
        if not found:
            raise SpecError(f"{source}: sweep.traces: no such file {t}")
    if not scenarios and not traces:
        scenarios = ["default"]
    seeds = sw.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, (int, list)):
        raise SpecError(f"{source}: sweep.seeds must be a count or a list of seeds")
    if isinstance(seeds, int):
        if not 1 <= seeds <= 100_000:
            raise SpecError(f"{source}: sweep.seeds must be 1..100000, got {seeds}")
        seeds = list(range(seeds))
    if not seeds or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                            for x in seeds):
        raise SpecError(f"{source}: sweep.seeds: a list of non-negative integers")
    repeated = sorted(x for x, n in collections.Counter(seeds).items() if n > 1)
    if repeated:
        # two points with one id: the second would silently stand for the first
        raise SpecError(f"{source}: sweep.seeds: seed {repeated[0]} is listed twice")
    events = sw.get("events", 20_000)
    if isinstance(events, bool) or not isinstance(events, int) or not 1 <= events <= 10**9:
        raise SpecError(f"{source}: sweep.events must be an integer 1..1e9")
    profile = sw.get("cost_profile", "xgene-nvhe")
    if not isinstance(profile, str):
        raise SpecError(f"{source}: sweep.cost_profile must be a name or a path")
    from kvmctx.costs.profiles import BUILTIN, load_profile

    try:
        if profile not in BUILTIN and not Path(profile).is_absolute():
            profile = str((base / profile).resolve())
        load_profile(profile)
    except ValueError as e:   # ProfileError, or a NUL byte in the name
        raise SpecError(f"{source}: sweep.cost_profile: {e}") from None
    metrics = sw.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, list) or not all(isinstance(x, str) for x in metrics):
            raise SpecError(f"{source}: sweep.metrics must be a list of metric names")
        known = set(METRICS)
        for mname in metrics:
            if mname not in known:
                raise SpecError(f"{source}: sweep.metrics: unknown metric {mname!r}; valid: "
                                f"{', '.join(METRICS)}")
    grid_in = data.get("grid", {})
    if not isinstance(grid_in, dict):
        raise SpecError(f"{source}: [grid] must be a table")
    grid: dict[str, list[Any]] = {}
    for key, vals in grid_in.items():
        if key not in KNOBS:
            raise SpecError(f"{source}: unknown grid key grid.{key}; valid knobs: "
                            f"{', '.join(sorted(KNOBS))}")
        if isinstance(vals, dict):
            try:
                vals = _range(key, vals)
            except SpecError as e:
                raise SpecError(f"{source}: {e}") from None
        if not isinstance(vals, list):
            vals = [vals]
        if not vals:
            raise SpecError(f"{source}: grid.{key} is empty")
        clean = []
        for v in vals:
            try:
                clean.append(validate_knob(key, v))
            except ValueError as e:
                raise SpecError(f"{source}: grid.{key}: {e}") from None
        grid[key] = list(dict.fromkeys(clean))
    spec = SweepSpec(policies, scenarios, traces, seeds, events, profile, metrics, grid,
                     source)
    # Counted before the points are built: a big grid must not be materialised.
    n = (len(scenarios) + len(traces)) * len(seeds) * len(policies) \
        * math.prod(len(v) for v in grid.values())
    if n > 5_000_000:
        raise SpecError(f"{source}: the grid has {n:,} points; split it (at most 5,000,000)")
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: no such spec file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: not valid TOML: {e}") from None
    return parse_spec(data, str(p))


# ------------------------------------------------------------------ one point

METRICS = ("fp_traps", "guest_fp_traps", "host_sve_traps", "saves", "restores",
           "bytes_saved", "bytes_restored", "guest_exits", "cycles", "cycles_per_exit",
           "saves_restores_per_1k_exits", "violations")


def run_point(p: Point, metrics: list[str] | None = None) -> dict[str, Any]:
    """One row: the point's identity, its metrics, and status/error."""
    from kvmctx import api

    row = p.as_dict()
    t0 = time.perf_counter()
    try:
        knobs = dict(p.knobs)
        if p.trace:
            r = api.run_trace(p.trace, p.policy, seed=p.seed, knobs=knobs,
                              cost_profile=p.profile, scenario=p.scenario, events=p.events)
        else:
            r = api.run(p.policy, p.scenario, seed=p.seed, events=p.events, knobs=knobs,
                        cost_profile=p.profile)
        j = r.as_json()
        vals = {**j["metrics"], "guest_fp_traps": j["derived"]["guest_fp_traps"],
                "host_sve_traps": j["derived"]["host_sve_traps"],
                "cycles_per_exit": j["derived"]["cycles_per_exit"],
                "saves_restores_per_1k_exits": j["derived"]["saves_restores_per_1k_exits"]}
        for mname in metrics or METRICS:
            row[mname] = vals[mname]
        if vals["violations"]:
            row["status"] = "violation"
            first = j["violation_examples"][0] if j["violation_examples"] else {}
            row["error"] = f"{vals['violations']} invariant violation(s): " \
                           f"[{first.get('invariant', '?')}] {first.get('message', '')}"
        else:
            row["status"] = "ok"
            row["error"] = ""
    except Exception as e:  # recorded, never fatal to the sweep
        tb = traceback.extract_tb(e.__traceback__)
        where = f" ({tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno})" if tb else ""
        row["status"] = "error"
        row["error"] = f"{type(e).__name__}: {e}{where}"
        for mname in metrics or METRICS:
            row[mname] = None
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row


# ------------------------------------------------------------------ directory


@contextmanager
def locked(out: Path) -> Iterator[None]:
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpecError(f"{out}: another sweep is writing this directory (locked)") \
                from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def prepare_dir(out: Path, spec: SweepSpec) -> None:
    """Record the spec; refuse to resume a directory made by another spec."""
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    for tmp in (out / SHARDS).glob("*.tmp"):
        tmp.unlink()   # a shard being written when the last run died
    f = out / SPEC_FILE
    mine = spec.canonical()
    if f.exists():
        try:
            old = json.loads(f.read_text())
        except (OSError, ValueError):
            old = None
        if not isinstance(old, dict):
            raise SpecError(f"{f}: unreadable; is {out} a sweep directory?")
        if old != mine:
            diff = sorted(k for k in mine if old.get(k) != mine[k])
            raise SpecError(f"{out} holds a sweep of a different spec (differs in "
                            f"{', '.join(diff)}); use another --out")
    else:
        tmp = f.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(mine, indent=2))
        os.replace(tmp, f)


def read_rows(out: Path) -> Any:
    """Every finished row (a polars DataFrame), one per point id."""
    import polars as pl

    files = sorted((out / SHARDS).glob("*.parquet"))
    if not files:
        return pl.DataFrame()
    df = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    return df.unique(subset=["point_id"], keep="first", maintain_order=True)


def done_ids(out: Path) -> set[str]:
    df = read_rows(out)
    return set(df["point_id"].to_list()) if len(df) else set()


class ShardWriter:
    def __init__(self, out: Path) -> None:
        self.dir = out / SHARDS
        self.rows: list[dict[str, Any]] = []
        self.last = time.monotonic()
        self.shards = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= FLUSH_ROWS or time.monotonic() - self.last > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        import polars as pl

        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.dir / (name + ".tmp")
        pl.DataFrame(self.rows, infer_schema_length=None).write_parquet(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.dir / name)
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.rows = []
        self.last = time.monotonic()
        self.shards += 1


# ------------------------------------------------------------------ backends


@dataclass
class SweepResult:
    total: int
    skipped: int
    ran: int = 0
    failures: int = 0
    seconds: float = 0.0
    backend: str = "local"
    workers: int = 1
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def points_per_s(self) -> float:
        return self.ran / self.seconds if self.seconds > 0 else 0.0


def _local(points: list[Point], metrics: list[str] | None, workers: int
           ) -> Iterator[dict[str, Any]]:
    if workers == 1:
        for p in points:
            yield run_point(p, metrics)
        return
    with ProcessPoolExecutor(max_workers=workers) as ex:
        futs = [ex.submit(run_point, p, metrics) for p in points]
        for f in as_completed(futs):
            yield f.result()


def _dask(points: list[Point], metrics: list[str] | None, workers: int, address: str | None,
          processes: bool) -> Iterator[dict[str, Any]]:
    try:
        from dask.distributed import Client, LocalCluster
        from dask.distributed import as_completed as d_completed
    except ImportError:
        raise SpecError("the dask backend needs dask[distributed]: pip install "
                        "'kvmctx[cluster]'") from None
    cluster = None
    if address:
        try:
            client = Client(address, timeout="10s")
        except OSError as e:
            raise SpecError(f"cannot reach the Dask scheduler at {address}: {e}") from None
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                               dashboard_address=None)
        client = Client(cluster)
    try:
        futs = [client.submit(run_point, p, metrics, key=f"kvmctx-{p.id}", pure=False)
                for p in points]
        for f in d_completed(futs):
            yield f.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_sweep(spec: SweepSpec, out: Path, backend: str = "local", workers: int = 0,
              address: str | None = None, progress: Callable[[int, int], None] | None = None,
              dask_processes: bool = True) -> SweepResult:
    if backend not in BACKENDS:
        raise SpecError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    n = workers or os.cpu_count() or 1
    with locked(out):
        prepare_dir(out, spec)
        points = spec.points()
        done = done_ids(out)
        todo = [p for p in points if p.id not in done]
        res = SweepResult(len(points), len(points) - len(todo), backend=backend, workers=n)
        writer = ShardWriter(out)
        t0 = time.perf_counter()
        if progress is not None:
            progress(res.skipped, res.total)
        source = (_local(todo, spec.metrics, n) if backend == "local"
                  else _dask(todo, spec.metrics, n, address, dask_processes))
        try:
            for row in source:
                writer.add(row)
                res.ran += 1
                if row["status"] != "ok":
                    res.failures += 1
                    if len(res.failed) < 20:
                        res.failed.append({k: row[k] for k in ("point_id", "policy", "scenario",
                                                               "seed", "status", "error")})
                if progress is not None:
                    progress(res.skipped + res.ran, res.total)
        finally:
            writer.flush()
        res.seconds = time.perf_counter() - t0
    return res
