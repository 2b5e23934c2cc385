"""Trace import and replay: the sample traces, messy input, fuzzing, the oracle."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import examples
from kvmctx import api
from kvmctx.io import trace as T
from kvmctx.io.trace_synth import synth_lines, write_synth

DATA = Path(__file__).parent / "data" / "traces"
SAMPLES = sorted(DATA.glob("*.txt"))
SAFE = ["upstream-6.14", "upstream-4.18", "arm64-4.17", "brown-sve-2022", "pkvm",
        "arm32-vfp-2012", "martin-rfc-2018"]


def kvmctx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvmctx", *args], capture_output=True,
                          text=True, timeout=300)


# ---------------------------------------------------------------- parsing


def test_qemu_sample_threads_segments_and_reasons() -> None:
    tw = T.parse_file(DATA / "qemu-2vcpu.txt")
    s = tw.summary()
    assert s["cpus"] == 2 and s["skipped"] == {} and s["lost_events"] == 0
    v0, v1 = s["vcpus"]
    assert (v0["comm"], v0["pid"], v0["vcpu"]) == ("CPU 0/KVM", 2046, 0)
    assert (v1["comm"], v1["pid"], v1["vcpu"]) == ("CPU 1/KVM", 2047, 1)
    assert v0["segments"] == 5 and v0["exits_to_user"] == 2
    assert v0["exits_by_reason"] == {"DABT_LOW": 2, "SYS64": 1, "HVC64": 1, "IRQ": 1}
    assert v1["exits_by_reason"] == {"WFx": 2, "IRQ": 1}
    assert s["migrations"] == 1
    assert list(tw.ts_ns) == sorted(tw.ts_ns)


def test_kvmtool_names_and_tracefs_header() -> None:
    s = T.parse_file(DATA / "kvmtool-1vcpu.txt").summary()
    assert [(v["comm"], v["pid"]) for v in s["vcpus"]] == [("kvm-vcpu-0", 88776)]
    assert s["vcpus"][0]["segments"] == 6
    assert s["skipped"] == {}


def test_messy_sample_reports_every_skip_with_line_numbers() -> None:
    s = T.parse_file(DATA / "messy.txt").summary()
    assert s["skipped"] == {"not an ftrace line": 1, "malformed sched_switch": 1,
                            "truncated last line": 1}
    assert s["skipped_examples"] == {"not an ftrace line": [8], "malformed sched_switch": [12],
                                     "truncated last line": [20]}
    assert s["lost_events"] == 1
    assert s["ignored"] == {"kvm_fpu": 1}
    # The line for CPU 1 came after a later line of CPU 0 and is put back in order.
    tw = T.parse_file(DATA / "messy.txt")
    assert list(tw.ts_ns) == sorted(tw.ts_ns)


def test_out_of_order_lines_are_merged_within_the_window() -> None:
    lines = list(synth_lines(events=300, cpus=3, vcpus=3, seed=4, header=False))
    a = T.parse_lines(lines)
    rng = random.Random(1)
    shuffled = lines[:]
    for i in range(0, len(shuffled) - 4, 4):  # local disorder, like per-CPU buffers
        block = shuffled[i:i + 4]
        rng.shuffle(block)
        shuffled[i:i + 4] = block
    b = T.parse_lines(shuffled)
    assert b.late == 0
    assert list(a.ts_ns) == list(b.ts_ns)
    assert sorted(zip(a.ts_ns, a.kind, a.pid, strict=True)) == \
        sorted(zip(b.ts_ns, b.kind, b.pid, strict=True))


def test_fatal_inputs_are_one_line_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(random.Random(0).getrandbits(8) for _ in range(5000)))
    for path, msg in ((empty, "empty input"), (garbage, "no ftrace event line"),
                      (tmp_path / "missing.txt", "no such file"), (tmp_path, "directory"),
                      ("x" * 5000, "File name too long")):   # was an OSError from exists()
        with pytest.raises(T.TraceFormatError, match=msg) as e:
            T.parse_file(path)
        assert "\n" not in str(e.value)


def test_parquet_round_trip_runs_identically(tmp_path: Path) -> None:
    src = tmp_path / "t.txt"
    write_synth(str(src), events=1500, cpus=2, vcpus=3, seed=2)
    tw = T.parse_file(src)
    pq = tmp_path / "t.parquet"
    tw.to_parquet(pq)
    back = T.TraceWorkload.from_parquet(pq)
    assert back.summary() == tw.summary()
    a = api.run_trace(str(src), "upstream-6.14", seed=3)
    b = api.run_trace(str(pq), "upstream-6.14", seed=3)
    assert a.sim.counters == b.sim.counters


# ---------------------------------------------------------------- replay


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_every_policy_replays_every_sample(sample: Path) -> None:
    tw = T.parse_file(sample)
    cycles = {}
    for pol in api.policy_names():
        r = api.run_trace(tw, pol, seed=5, knobs={"guest_fp": 0.7})
        assert r.sim.events == tw.events
        assert r.scenario == f"trace:{sample.name}"
        if pol in SAFE:
            assert r.metrics()["violations"] == 0, (pol, r.sim.violation_records[:1])
        cycles[pol] = r.cycles()["total"]
        assert any("guest FP use is not in traces" in a for a in r.assumptions)
    assert all(cycles["oracle"] <= c for c in cycles.values())


def test_trace_replay_is_deterministic_and_follows_the_trace(tmp_path: Path) -> None:
    src = tmp_path / "t.txt"
    write_synth(str(src), events=4000, cpus=4, vcpus=4, seed=9)
    tw = T.parse_file(src)
    exits = sum(v["segments"] for v in tw.summary()["vcpus"])
    a = api.run_trace(tw, "upstream-6.14", seed=1)
    b = api.run_trace(tw, "upstream-6.14", seed=1)
    assert a.sim.counters == b.sim.counters
    assert a.metrics()["guest_exits"] == exits          # one model exit per kvm_exit
    assert a.as_json()["counters"]["exits_to_user"] == sum(
        v["exits_to_user"] for v in tw.summary()["vcpus"])
    assert a.as_json()["trace"]["repairs"].get("thread running on another CPU", 0) == 0
    none = api.run_trace(tw, "upstream-6.14", seed=1, knobs={"guest_fp": 0.0})
    assert none.as_json()["counters"]["guest_fp_traps"] == 0


@pytest.mark.parametrize("seed", range(4))
def test_oracle_is_never_beaten_on_synthetic_traces(seed: int) -> None:
    tw = T.parse_lines(list(synth_lines(events=2500, cpus=2 + seed % 2, vcpus=2 + seed,
                                        seed=seed)))
    low = api.run_trace(tw, "oracle", seed=seed).cycles()["total"]
    for pol in api.policy_names():
        r = api.run_trace(tw, pol, seed=seed)
        assert low <= r.cycles()["total"], pol


def test_trace_without_vcpus_is_a_usage_error() -> None:
    lines = ["<idle>-0 [000] d..2. 10.000001: sched_switch: prev_comm=swapper/0 prev_pid=0 "
             "prev_prio=120 prev_state=R ==> next_comm=bash next_pid=7 next_prio=120"]
    with pytest.raises(api.UsageError, match="no vCPU thread"):
        api.run_trace(T.parse_lines(lines), "upstream-6.14")


# ---------------------------------------------------------------- fuzzing


def _mutate(line: str, rng: random.Random) -> str:
    op = rng.randrange(8)
    if op == 0 and line:
        return line[:rng.randrange(len(line))]                       # truncation
    if op == 1:
        i = rng.randrange(len(line) + 1)
        return line[:i] + "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(5)) + line[i:]
    if op == 2:
        return line.replace(str(rng.randrange(10)), "9" * rng.randrange(1, 40))  # huge numbers
    if op == 3:
        parts = line.split(" ")
        rng.shuffle(parts)                                              # reordered fields
        return " ".join(parts)
    if op == 4:
        return line.replace(":", "", 1)
    if op == 5:
        return line.replace("[0", "[-", 1)
    if op == 6:
        return line * 2
    return line


def _check_parse(lines: list, source: str = "<fuzz>") -> None:
    try:
        tw = T.parse_lines(lines, source=source)
    except T.TraceFormatError as e:
        assert "\n" not in str(e) and source in str(e)
        return
    assert tw.events >= 0 and list(tw.ts_ns) == sorted(tw.ts_ns) or tw.late
    try:
        r = api.run_trace(tw, "upstream-6.14", seed=0, invariants=True)
    except api.UsageError as e:
        assert "\n" not in str(e)
        return
    assert r.metrics()["violations"] == 0


BASE_LINES = [ln for p in SAMPLES for ln in p.read_text().splitlines()]


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(BASE_LINES) - 1), st.integers(0, 2**32)),
                min_size=1, max_size=40))
def test_fuzzed_real_format_lines_never_traceback(picks: list[tuple[int, int]]) -> None:
    lines = []
    for idx, salt in picks:
        rng = random.Random(salt)
        lines.append(_mutate(BASE_LINES[idx], rng) if salt % 3 else BASE_LINES[idx])
    _check_parse(lines)


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_traceback(data: bytes) -> None:
    lines = [(raw.decode("utf-8", "replace"), True) for raw in data.split(b"\n")]
    _check_parse(lines)


def test_corpus_of_10k_generated_files(tmp_path: Path) -> None:
    """10,000 small files: synthetic traces, mutated, in both namings; each is
    either read (with its skips counted) or refused with a line number."""
    rng = random.Random(2026)
    outcomes = {"read": 0, "refused": 0}
    for i in range(10_000):
        lines = list(synth_lines(events=rng.randrange(1, 12), cpus=rng.randrange(1, 4),
                                 vcpus=rng.randrange(1, 3), seed=i,
                                 style="qemu" if i % 2 else "kvmtool", header=i % 3 == 0))
        lines = [_mutate(ln, rng) if rng.random() < 0.3 else ln for ln in lines]
        path = tmp_path / f"c{i % 50}.txt"
        data = "\n".join(lines).encode("utf-8", "surrogatepass")
        if i % 7 == 0:
            data = data.replace(b"K", b"\xff\xfe", 1)  # invalid UTF-8
        path.write_bytes(data)
        try:
            tw = T.parse_file(path)
        except T.TraceFormatError as e:
            assert str(path) in str(e) and "\n" not in str(e)
            outcomes["refused"] += 1
            continue
        outcomes["read"] += 1
        if i % 25 == 0:  # replay a sample of them (the replay is the slower part)
            with contextlib.suppress(api.UsageError):
                api.run_trace(tw, "upstream-6.14", seed=i)
    assert outcomes["read"] > 5000 and outcomes["refused"] > 0


# ---------------------------------------------------------------- CLI


def test_cli_import_trace_and_run_trace(tmp_path: Path) -> None:
    out = tmp_path / "w.parquet"
    r = kvmctx("import-trace", str(DATA / "messy.txt"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "malformed sched_switch 1 (e.g. line 12)" in r.stdout
    assert "truncated last line 1 (e.g. line 20)" in r.stdout
    r = kvmctx("run", "--trace", str(out), "-p", "arm64-4.17", "--guest-fp", "0.5")
    assert r.returncode == 0, r.stderr
    assert "guest FP use is not in traces" in r.stdout
    r = kvmctx("compare", "--trace", str(DATA / "qemu-2vcpu.txt"), "--policies",
               "upstream-6.14,oracle", "--json")
    assert r.returncode == 0, r.stderr


def test_cli_bad_trace_is_exit_2_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("hello\n" * 3000)
    for args in (["run", "--trace", str(bad)], ["import-trace", str(bad)],
                 ["import-trace", str(tmp_path / "nope.txt")],
                 ["import-trace", str(DATA / "messy.txt"), "-o", str(tmp_path / "x.csv")]):
        r = kvmctx(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert len([ln for ln in r.stderr.splitlines() if ln.startswith("kvmctx: error")]) == 1


def test_a_field_naming_a_cpu_outside_the_trace_is_repaired_not_a_crash(tmp_path: Path) -> None:
    """Found by the fuzz test: sched_migrate_task's orig_cpu may name a CPU that no
    line of the trace ran on."""
    lines = (DATA / "qemu-2vcpu.txt").read_text().splitlines()
    i = next(n for n, ln in enumerate(lines) if "sched_migrate_task" in ln)
    lines.insert(i + 1, lines[i].replace("pid=2046", "pid=31337").replace("orig_cpu=0",
                                                                          "orig_cpu=7"))
    p = tmp_path / "far-cpu.txt"
    p.write_text("\n".join(lines) + "\n")
    r = api.run_trace(str(p), "upstream-6.14")
    assert r.metrics()["violations"] == 0
    assert r.extra["trace"]["repairs"].get("event names a CPU outside the trace") == 1
