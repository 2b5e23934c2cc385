"""The checker: verdicts, shortest counterexamples, replay, and checking the checker."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from helpers import ALL_FEATURES
from kvmctx import policies
from kvmctx.catalogue import mutants as MU
from kvmctx.engines import story as ST
from kvmctx.engines.canon import Canon
from kvmctx.engines.checker import BOUNDS, Bounds, Checker
from kvmctx.model.machine import Model

TINY = Bounds("tiny", cpus=2, fpsimd_tasks=1, sve_tasks=0, vcpus=1,
              features=frozenset({"softirq-neon", "exit-user", "migration"}),
              budgets=(("migration", 1), ("softirq", 1), ("switch", 2)))


def naive_reachable(m: Model, b: Bounds, depth: int) -> set[bytes]:
    """BFS over raw states (no renumbering, no symmetry) to a depth; canonical set."""
    canon = Canon(m)
    pos = {name: i for i, (name, _) in enumerate(b.budgets)}
    from kvmctx.engines.checker import budget_class

    start = (tuple(m.new_state()), tuple(n for _, n in b.budgets))
    seen = {start}
    frontier = [start]
    for _ in range(depth):
        nxt = []
        for st, bud in frontier:
            for a in m.enabled(list(st), b.features):
                nb = bud
                cls = budget_class(m, list(st), a)
                if cls in pos:
                    if not bud[pos[cls]]:
                        continue
                    nb = tuple(x - 1 if i == pos[cls] else x for i, x in enumerate(bud))
                s = list(st)
                m.apply(s, a)
                m.vio.clear()
                item = (tuple(s), nb)
                if item not in seen:
                    seen.add(item)
                    nxt.append(item)
        frontier = nxt
    return {canon.key(list(s)) + bytes(bud) for s, bud in seen}


def reduced_reachable(m: Model, b: Bounds, depth: int) -> set[bytes]:
    ch = Checker(m, Bounds(**{**b.__dict__, "depth": depth}))
    key0 = ch.canon.key(m.new_state()) + ch.budget_init
    seen = {key0}
    frontier = [key0]
    for _ in range(depth):
        nxt = []
        for k in frontier:
            for _a, s, bud in ch.successors(k):
                m.vio.clear()
                k2 = ch.canon.key(s) + bud
                if k2 not in seen:
                    seen.add(k2)
                    nxt.append(k2)
        frontier = nxt
    return seen


def test_naive_exploration_agrees_with_reduced_on_state_sets():
    for pol in ("upstream-6.14", "arm64-4.17"):
        m = Model(TINY.config(), policies.get(pol))
        naive = naive_reachable(m, TINY, 7)
        reduced = reduced_reachable(m, TINY, 7)
        # Symmetry can reach a class a step earlier only through relabelling, never
        # a new class: the canonical sets of the same depth must be equal.
        assert naive == reduced, (pol, len(naive), len(reduced))


SYM = Bounds("sym", cpus=2, fpsimd_tasks=2, sve_tasks=0, vcpus=1,
             features=frozenset({"softirq-neon", "exit-user", "migration"}),
             budgets=(("migration", 1), ("softirq", 1), ("switch", 2)))


def test_canonical_key_is_a_class_invariant_under_every_relabelling():
    """key(g(x)) == key(x) for every symmetry g (2 CPUs x 2 identical tasks)."""
    m = Model(SYM.config(), policies.get("upstream-6.14"))
    cn = Canon(m)
    assert len(cn.relabels) == 3
    rng = random.Random(3)
    for _ in range(300):
        s = m.new_state()
        for _ in range(rng.randrange(1, 40)):
            acts = m.enabled(s, SYM.features)
            m.apply(s, acts[rng.randrange(len(acts))])
            m.vio.clear()
        k = cn.key(s)
        r = bytes(cn._small_versions(s))
        for ig, slices, tagtab, _src in cn.relabels:
            x = bytearray(ig(r))
            for a, z, tab in slices:
                x[a:z] = x[a:z].translate(tab)
            x[cn.rq_idle] = 0
            if tagtab is not None:
                x[cn.lo0:cn.tags_end] = x[cn.lo0:cn.tags_end].translate(tagtab)
            assert cn.key(list(x)) == k


def test_naive_agrees_with_reduced_under_thread_symmetry():
    m = Model(SYM.config(), policies.get("upstream-6.14"))
    assert naive_reachable(m, SYM, 6) == reduced_reachable(m, SYM, 6)


def test_naive_and_reduced_agree_on_verdicts():
    mu = MU.get("flush-without-foreign").build()
    for pol, expect in ((policies.get("upstream-6.14"), None), (mu, "violation")):
        m = Model(TINY.config(), pol)
        res = Checker(m, TINY).run()
        m2 = Model(TINY.config(), pol)
        res2 = Checker(m2, TINY, symmetry=False).run()
        assert (res.violation is None) == (res2.violation is None)
        assert (res.violation is not None) == (expect == "violation")
        if res.violation:
            assert res.depth == res2.depth, "both are breadth-first: same shortest depth"


def test_random_simulation_never_leaves_the_checked_state_space():
    b = BOUNDS["small"]
    m = Model(b.config(), policies.get("upstream-6.14"))
    ch = Checker(m, b)
    res = ch.run()
    assert res.complete and res.violation is None
    # Rebuild the full canonical set, then walk randomly and look every state up.
    allkeys = reduced_reachable(m, b, res.depth + 1)
    assert len(allkeys) == res.states
    rng = random.Random(5)
    for _ in range(200):
        s = m.new_state()
        for _ in range(60):
            acts = m.enabled(s, b.features)
            m.apply(s, acts[rng.randrange(len(acts))])
            m.vio.clear()
            assert ch.canon.key(s) in allkeys


def test_counterexample_is_shortest_and_replays():
    mu = MU.get("flush-without-foreign")
    m = Model(BOUNDS["small"].config(), mu.build())
    res = Checker(m, BOUNDS["small"]).run()
    assert res.violation is not None and len(res.path) == res.depth
    recs, _ = ST.replay(m, res.path, BOUNDS["small"].features)
    assert recs[-1].violations and recs[-1].violations[0]["invariant"] == \
        res.violation["invariant"]
    # No shorter violating path exists: a depth-bounded search one shorter is clean.
    short = Bounds(**{**BOUNDS["small"].__dict__, "depth": res.depth - 1})
    assert Checker(Model(short.config(), mu.build()), short).run().violation is None


def test_cli_check_json_out_and_replay(tmp_path):
    cex = tmp_path / "cex.json"
    r = subprocess.run([sys.executable, "-m", "kvmctx", "check", "--mutant",
                        "flush-without-foreign", "--bounds", "small", "--json", "--out", str(cex)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    j = json.loads(r.stdout)
    assert set(j) >= {"policy", "mutant", "bounds", "states", "transitions", "depth",
                      "complete", "seconds", "violation"}
    assert j["violation"]["invariant"] and j["violation"]["steps"]
    for _ in range(2):  # it must reproduce every time
        rr = subprocess.run([sys.executable, "-m", "kvmctx", "replay", str(cex)],
                            capture_output=True, text=True, timeout=300)
        assert rr.returncode == 1 and "reproduced" in rr.stdout
    # A corrupted file is bad input: exit 2, one line.
    cex.write_text("{not json")
    rr = subprocess.run([sys.executable, "-m", "kvmctx", "replay", str(cex)],
                        capture_output=True, text=True, timeout=60)
    assert rr.returncode == 2 and len(rr.stderr.strip().splitlines()) == 1


def test_cli_check_exit_codes():
    ok = subprocess.run([sys.executable, "-m", "kvmctx", "check", "--bounds", "small"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    inc = subprocess.run([sys.executable, "-m", "kvmctx", "check", "--bounds", "small",
                          "--max-states", "50"], capture_output=True, text=True, timeout=300)
    assert inc.returncode == 3
    bad = subprocess.run([sys.executable, "-m", "kvmctx", "check", "--features", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown feature" in bad.stderr


def test_helpers_features_are_known():
    from kvmctx.model.config import FEATURES

    assert set(FEATURES) >= ALL_FEATURES
