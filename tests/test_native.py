"""The native engine agrees exactly with the Python engine (docs/engine.md).

Every built-in policy on every named bounds and every mutant at standard
and its own bounds (capped), the catalogue mutants and the small bounds in full: identical state and
transition counts, depths, verdicts, stop reasons and counterexample steps.
Canonicalisation agrees on random states; results do not depend on --jobs;
steps the native engine cannot execute are named and run on Python.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmctx import policies as P
from kvmctx.catalogue import mutants as MU
from kvmctx.engines import checker as CK
from kvmctx.engines import engine as EN
from kvmctx.engines import native as NA
from kvmctx.engines.canon import Canon
from kvmctx.model.machine import Model

pytestmark = pytest.mark.skipif(not NA.available(), reason="native engine not built")

MU.load_all()
DESIGNS = [("policy", n) for n in P.names()] + [("mutant", n) for n in MU.names()]
CAP = 20_000


def _cross() -> list[tuple[str, str, str]]:
    """Every policy at every named bounds; a mutant (its base with one flag or hook
    changed) at standard and at its own bounds, which the catalogue test below runs
    further for catalogue mutants: the cross product of every mutant with every bounds
    repeated its base's paths and grew with each new bounds."""
    out = [("policy", n, b) for n in P.names() for b in CK.BOUNDS]
    for mu in MU.all_mutants():
        out.append(("mutant", mu.name, "standard"))
        if mu.bounds and mu.bounds != "standard" and mu.catalogue is None:
            out.append(("mutant", mu.name, mu.bounds))
    return out


def _policy(kind: str, name: str):
    return MU.get(name).build() if kind == "mutant" else P.get(name)


def _both(pol, bounds: CK.Bounds, max_states: int | None, jobs: int = 1):
    b, _ = CK.adapt_bounds(bounds, pol.supports)
    rp = CK.Checker(Model(b.config(), pol), b, max_states=max_states).run()
    rn = EN.check(Model(b.config(), pol), b, engine="native", jobs=jobs,
                  max_states=max_states, notice=None)
    return rp, rn


def _same(rp: CK.CheckResult, rn: CK.CheckResult) -> None:
    assert rn.engine == "native", "fell back to the Python engine"
    got = (rn.states, rn.transitions, rn.depth, rn.complete, rn.stop_reason, rn.violation,
           rn.path)
    want = (rp.states, rp.transitions, rp.depth, rp.complete, rp.stop_reason, rp.violation,
            rp.path)
    assert got == want


@pytest.mark.parametrize(("kind", "name", "bname"), _cross(),
                         ids=[f"{n}-{b}" for _k, n, b in _cross()])
def test_engines_agree_on_every_design_and_bounds(kind: str, name: str, bname: str) -> None:
    rp, rn = _both(_policy(kind, name), CK.BOUNDS[bname], CAP)
    _same(rp, rn)


@pytest.mark.parametrize(("kind", "name"), DESIGNS, ids=[n for _k, n in DESIGNS])
def test_engines_agree_in_full_at_small(kind: str, name: str) -> None:
    rp, rn = _both(_policy(kind, name), CK.BOUNDS["small"], None)
    _same(rp, rn)


@pytest.mark.parametrize("mu", MU.catalogue(), ids=lambda m: m.name)
def test_engines_agree_on_catalogue_counterexamples(mu: MU.Mutant) -> None:
    """Each catalogue mutant at its own bounds: the same shortest counterexample
    (capped where the Python engine would take minutes)."""
    b = CK.BOUNDS[mu.bounds] if mu.bounds else CK.BOUNDS["standard"]
    rp, rn = _both(mu.build(), b, 400_000)
    _same(rp, rn)


def test_standard_prefix_and_jobs_do_not_change_results() -> None:
    pol = P.get("upstream-6.14")
    rp, rn1 = _both(pol, CK.BOUNDS["standard"], 150_000)
    _same(rp, rn1)
    for jobs in (2, 3):
        _, rnj = _both(pol, CK.BOUNDS["standard"], 150_000, jobs=jobs)
        _same(rp, rnj)


def test_jobs_give_the_same_counterexample() -> None:
    pol = P.get("tang-eager-2018")
    rp, rn = _both(pol, CK.BOUNDS["standard"], None, jobs=2)
    _same(rp, rn)
    assert rn.violation is not None


SYM = CK.Bounds("sym", cpus=2, fpsimd_tasks=2, sve_tasks=0, vcpus=1,
                features=frozenset({"softirq-neon", "preempt", "migration", "exit-user"}))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=60))
def test_canonicalisation_agrees_on_random_states(choices: list[int]) -> None:
    m = Model(SYM.config(), P.get("upstream-6.14"))
    cn = Canon(m)
    ch = NA.NativeChecker(m, SYM)
    search = ch._search()
    s = m.new_state()
    for c in choices:
        acts = m.enabled(s, SYM.features)
        m.apply(s, acts[c % len(acts)])
        m.vio.clear()
        try:
            raw = bytes(s)
        except ValueError:  # a version past a byte: the Python slow path, not native
            continue
        assert search.canonical(raw) == cn.key_bytes(raw)


def test_state_size_bound_per_state() -> None:
    """The store holds a standard-bounds state in under 80 bytes (its own count)."""
    pol = P.get("upstream-6.14")
    b = CK.BOUNDS["standard"]
    r = EN.check(Model(b.config(), pol), b, engine="native", max_states=200_000, notice=None)
    assert r.engine_stats["store_bytes"] / r.states < 80


# ------------------------------------------------------------------ fallbacks

_LEN_STEP = '''
from kvmctx.policies.base import Step
from kvmctx.policies.upstream_6_14 import POLICY as BASE


def _looks_at_the_whole_state(m, s, k, t):
    if len(s) < 0:
        raise AssertionError


POLICY = BASE.but(name="len-of-state",
                  vcpu_load=(Step(_looks_at_the_whole_state, "look"),) + BASE.vcpu_load)
'''

_IMPURE_STEP = '''
from kvmctx.policies.base import Step
from kvmctx.policies.upstream_6_14 import POLICY as BASE

CALLS = [0]


def _counts_in_python(m, s, k, t):
    CALLS[0] += 1
    s[m.gtrap[k]] = CALLS[0] % 2


POLICY = BASE.but(name="hidden-counter",
                  vcpu_load=(Step(_counts_in_python, "count"),) + BASE.vcpu_load)
'''


@pytest.mark.parametrize(("src", "why"), [(_LEN_STEP, "len()"),
                                          (_IMPURE_STEP, "outside the state")])
def test_a_step_the_native_engine_cannot_run_is_named_and_run_on_python(
        tmp_path: Path, src: str, why: str) -> None:
    f = tmp_path / "mine.py"
    f.write_text(src)
    pol = P.load_file(f)
    b = CK.BOUNDS["small"]
    lines: list[str] = []
    rn = EN.check(Model(b.config(), pol), b, notice=lines.append)
    assert rn.engine == "python"
    assert len(lines) == 1 and why in lines[0] and "Python engine" in lines[0]
    r = subprocess.run([sys.executable, "-m", "kvmctx", "check", "--policy-file", str(f),
                        "--bounds", "small", "--json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode in (0, 1), r.stderr
    assert json.loads(r.stdout)["engine"] == "python"
    assert len(r.stderr.strip().splitlines()) == 1 and why in r.stderr


def test_missing_native_module_is_one_line_then_python(monkeypatch) -> None:
    monkeypatch.setattr(NA, "_native", None)
    lines: list[str] = []
    b = CK.BOUNDS["small"]
    r = EN.check(Model(b.config(), P.get("upstream-6.14")), b, notice=lines.append)
    assert r.engine == "python" and r.complete and r.states == 614
    assert len(lines) == 1 and "unavailable" in lines[0]


def test_copied_policy_file_runs_on_the_native_engine(tmp_path: Path) -> None:
    """A user copies a built-in policy, changes one line, and gets the fast engine."""
    src = Path(P.__file__).parent / "upstream_6_14.py"
    f = tmp_path / "mine.py"
    shutil.copy(src, f)
    text = f.read_text()
    assert 'name="upstream-6.14"' in text
    f.write_text(text.replace('name="upstream-6.14"', 'name="mine"'))
    r = subprocess.run([sys.executable, "-m", "kvmctx", "check", "--policy-file", str(f),
                        "--bounds", "small", "--json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["engine"] == "native" and data["policy"] == "mine"
    assert data["states"] == 614 and r.stderr == ""


def test_jobs_json_is_identical_apart_from_timings() -> None:
    outs = []
    for jobs in ("1", "2"):
        r = subprocess.run([sys.executable, "-m", "kvmctx", "check", "-p", "dall-tif-2018",
                            "--bounds", "standard", "--jobs", jobs, "--json"],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 1, r.stderr
        d = json.loads(r.stdout)
        d.pop("seconds")
        d.pop("peak_rss_mb")
        outs.append(d)
    assert outs[0] == outs[1]


def test_cli_engine_flags_validated() -> None:
    for args, needle in ((["--engine", "fast"], "--engine"), (["--jobs", "0"], "--jobs")):
        r = subprocess.run([sys.executable, "-m", "kvmctx", "check", "--bounds", "small",
                            *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and needle in r.stderr
        assert "Traceback" not in r.stderr


def test_mutation_testing_kills_the_same_mutants_on_both_engines() -> None:
    """Mutants rewrite the Python model; the native engine learns from the rewritten
    code, so every mutant gets the same verdict, invariant, depth and states."""
    from kvmctx.engines import mutation as MT

    picked = {s.id for s in MT.generate("upstream-6.14") if s.kind == "flag"}
    picked |= {s.id for s in MT.generate("upstream-6.14") if s.kind == "drop"
               and s.module == MT.HOST_MODULE}

    def run(engine: str) -> dict[str, tuple]:
        rep = MT.mutation_test("upstream-6.14", "small", jobs=2, max_states=3000,
                               only=lambda s: s.id in picked, engine=engine)
        return {r.spec.id: (r.verdict, r.invariant, r.depth, r.states, r.killed_at)
                for r in rep.results}

    native, python = run("native"), run("python")
    assert native == python
    assert sum(v[0] == "killed" for v in native.values()) >= 3


@pytest.mark.parametrize("engine", ["python", "native"])
def test_violation_message_names_the_tasks_of_the_story(engine: str) -> None:
    """The search finds the violation on a relabelled representative (two identical
    task slots); the message must name the tasks as the replayed story does."""
    from kvmctx.engines import story as ST

    mu = MU.get("clone-keeps-sm")
    b = CK.BOUNDS[mu.bounds]
    pol = mu.build()
    res = EN.check(Model(b.config(), pol), b, engine=engine, notice=None)
    recs, _ = ST.replay(Model(b.config(), pol), res.path, b.features)
    assert res.violation is not None
    assert res.violation["message"] in {v["message"] for v in recs[-1].violations}
