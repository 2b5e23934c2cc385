"""Every catalogue mutant is found; its fixed base is clean at the same bounds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kvmctx.catalogue import mutants as MU
from kvmctx.engines import checker as CK
from kvmctx.engines import engine as EN
from kvmctx.engines import story as ST
from kvmctx.model.machine import Model

# Bases that are clean at each mutant's bounds (the design without the bug). For
# mutants that swap in a whole flawed design the "base" is the design it replaced.
KVM = [m.name for m in MU.catalogue() if m.catalogue and m.catalogue >= 17]


def run(pol, bounds_name):
    b, _ = CK.adapt_bounds(CK.BOUNDS[bounds_name], pol.supports)
    m = Model(b.config(), pol)
    return EN.check(m, b), m, b


@pytest.mark.parametrize("name", KVM + ["flush-without-foreign"])
def test_mutant_is_found_and_replays(name):
    mu = MU.get(name)
    res, m, b = run(mu.build(), mu.bounds or "standard")
    assert res.violation is not None, name
    recs, _ = ST.replay(m, res.path, b.features)
    assert recs[-1].violations, "the counterexample must reproduce"


@pytest.mark.parametrize("name", ["put-masks-softirqs", "ctxsync-keeps-tif-sve",
                                  "lazy-zcr-switch", "flush-without-foreign", "bind-warn-or"])
def test_fixed_base_is_clean_at_the_mutants_bounds(name):
    from kvmctx import policies as P

    mu = MU.get(name)
    if (mu.bounds or "standard") == "standard":
        pytest.skip("standard verdicts of the bases are pinned in test_verdicts.py")
    res, _, _ = run(P.get(mu.base), mu.bounds)
    assert res.violation is None and res.complete


def test_catalogue_command_lists_every_entry_found():
    r = subprocess.run([sys.executable, "-m", "kvmctx", "check", "--catalogue", "--json"],
                       capture_output=True, text=True, timeout=3000)
    everything = json.loads(r.stdout)
    gaps = {x["catalogue"]: x["not_expressible"] for x in everything if x["mutant"] is None}
    rows = [x for x in everything if x["mutant"] is not None]
    assert gaps == MU.NOT_EXPRESSED and all(x["found"] is None for x in everything
                                            if x["mutant"] is None)
    assert rows and all({"mutant", "source", "bounds", "invariant", "found", "depth",
                         "states", "seconds"} <= set(x) for x in rows)
    assert all(x["bounds"] == (MU.get(x["mutant"]).bounds or "standard") for x in rows)
    assert all(x["found"] for x in rows), [x["mutant"] for x in rows if not x["found"]]
    assert r.returncode == 0
    numbers = {x["catalogue"] for x in rows}
    assert set(range(1, 26)) - {6} <= numbers   # every entry but the struct copy


HOST = ["pm-keeps-binding", "hotplug-keeps-binding", "exec-cpu-zero", "sigreturn-skips-fpsimd",
        "fpmr-before-svcr", "exec-keeps-fpmr"]


@pytest.mark.parametrize("name", HOST)
def test_host_lifecycle_mutant_is_found_with_the_expected_invariant(name):
    mu = MU.get(name)
    res, m, b = run(mu.build(), mu.bounds)
    assert res.violation is not None and res.violation["invariant"] == mu.invariant, name
    recs, _ = ST.replay(m, res.path, b.features)
    assert recs[-1].violations


@pytest.mark.parametrize("bounds", ["host-pm", "host-hotplug", "host-exec", "host-signals",
                                    "host-fpmr", "kvm-reset"])
def test_upstream_is_clean_with_each_lifecycle_feature(bounds):
    from kvmctx import policies as P

    res, _, _ = run(P.get("upstream-6.14"), bounds)
    assert res.violation is None and res.complete


def test_every_catalogue_entry_is_expressed_or_explained():
    expressed = {m.catalogue for m in MU.catalogue()}
    for n in range(1, 26):
        assert (n in expressed) != (n in MU.NOT_EXPRESSED), n
        if n in MU.NOT_EXPRESSED:
            assert len(MU.NOT_EXPRESSED[n]) > 40


def test_simulator_runs_lifecycle_events_and_catches_the_pm_mutant():
    from kvmctx import api

    ok = api.run("upstream-6.14", "default", seed=1, events=20000, knobs={"host_life": 0.05})
    assert ok.counters["signals"] > 0 and ok.metrics()["violations"] == 0
    bad = api.run(MU.get("pm-keeps-binding").build(), "overcommit", seed=1, events=40000,
                  knobs={"host_life": 0.05})
    assert bad.sim.violations_by_invariant.get("integrity", 0) > 0
