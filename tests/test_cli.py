"""The CLI contract: JSON shape, determinism, exit statuses, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

KVMCTX = [sys.executable, "-m", "kvmctx"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KVMCTX, *args], capture_output=True, text=True, timeout=600)


def test_run_json_contract_and_determinism():
    a = cli("run", "--events", "3000", "--seed", "4", "--json")
    b = cli("run", "--events", "3000", "--seed", "4", "--json")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout, "same arguments and seed must give byte-identical output"
    j = json.loads(a.stdout)
    assert {"policy", "scenario", "seed", "events", "metrics"} <= set(j)
    assert j["policy"] == "upstream-6.14" and j["scenario"] == "default"
    assert set(j["metrics"]) == {"fp_traps", "saves", "restores", "bytes_saved",
                                 "bytes_restored", "guest_exits", "cycles", "violations"}
    assert all(isinstance(v, int) for v in j["metrics"].values())


def test_bare_run_uses_defaults():
    r = cli("run", "--events", "500", "--json")
    assert r.returncode == 0
    j = json.loads(r.stdout)
    assert (j["policy"], j["scenario"], j["events"]) == ("upstream-6.14", "default", 500)


@pytest.mark.parametrize("args,needle", [
    (["run", "--policy", "nope"], "upstream-6.14"),
    (["run", "--scenario", "nope"], "valid: default"),
    (["run", "--events", "-1"], "--events"),
    (["run", "--guest-fp", "1.5"], "probability"),
    (["run", "--cpus", "0"], "cpus"),
    (["run", "--seed", "x"], "--seed"),
    (["run", "--cost-profile", "/no/such.toml"], "cost profile"),
    (["compare", "--policies", "upstream-6.14,bogus"], "unknown policy"),
    (["nosuchcommand"], "No such command"),
])
def test_bad_input_exits_2_with_one_line(args, needle):
    r = cli(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert needle in lines[0]


def test_policies_and_scenarios_json():
    for cmd in ("policies", "scenarios"):
        r = cli(cmd, "--json")
        assert r.returncode == 0
        rows = json.loads(r.stdout)
        assert rows and all({"name", "source", "summary"} <= set(x) for x in rows)


def test_demo_runs_both_policies_without_violations():
    r = cli("demo", "--events", "8000")
    assert r.returncode == 0, r.stderr
    assert "upstream-6.14" in r.stdout and "arm64-4.17" in r.stdout
    assert "Reading:" in r.stdout


def test_compare_json_is_a_list_of_run_objects(tmp_path):
    csv = tmp_path / "c.csv"
    r = cli("compare", "--policies", "upstream-6.14,arm64-4.17", "--events", "2000", "--json",
            "--csv", str(csv))
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["policy"] for x in rows] == ["upstream-6.14", "arm64-4.17"]
    assert csv.read_text().count("\n") == 3


def test_predictors_table_json_and_bad_input():
    r = cli("predictors", "--scenario", "mmio-heavy", "--events", "4000", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    kinds = [x["predictor"] for x in rows]
    assert kinds[:4] == ["last-trap", "counter", "ewma", "perfect"]
    perfect = rows[3]
    assert perfect["fp"] == 0 and perfect["fn"] == 0 and perfect["accuracy"] == 1.0
    for x in rows[:4]:
        assert x["tp"] + x["fp"] + x["tn"] + x["fn"] == x["predictions"]
        assert x["gap_to_oracle"] >= 0 and x["violations"] == 0
    bad = cli("predictors", "--events", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_check_mutant_runs_at_its_own_bounds_unless_bounds_is_given():
    own = json.loads(cli("check", "--mutant", "syscallno-discard", "--json").stdout)
    assert own["bounds"] == "host-syscall-stop" and own["violation"] is not None
    given = json.loads(cli("check", "--mutant", "syscallno-discard", "--bounds", "small",
                           "--json").stdout)
    assert given["bounds"] == "small" and given["states"] != own["states"]
