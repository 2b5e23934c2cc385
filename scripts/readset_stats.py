#!/usr/bin/env python3
"""Measure what decides the native engine's design (docs/engine.md).

Runs the Python checker's breadth-first search, but computes every enabled
set, step and recoverability test through read-keyed decision trees learned
from the Python model (kvmctx.engines.learn), in pure Python. It reports per
unit: calls, distinct read paths (= tree leaves = Python runs needed),
reads per call, and for steps the share that touch one CPU's per-CPU fields
only. It also checks that the tree engine finds the same state and transition
counts as the Python checker (when --compare).

    python scripts/readset_stats.py --policy upstream-6.14 --bounds small --compare
    python scripts/readset_stats.py --bounds standard --max-states 2000000
"""

from __future__ import annotations

import argparse
import time

from kvmctx import policies as P
from kvmctx.catalogue import mutants as MU
from kvmctx.engines import checker as CK
from kvmctx.engines.canon import Canon
from kvmctx.engines.learn import Learner
from kvmctx.model.layout import CPU
from kvmctx.model.machine import SCHED, Model


class Tree:
    """A decision tree over first reads; leaves hold a payload."""

    def __init__(self) -> None:
        self.root: list | None = None  # [idx, {val: child}] or ("L", payload)
        self.leaves = 0
        self.nodes = 0

    def get(self, s):
        n = self.root
        while n is not None and n[0] != "L":
            n = n[1].get(s[n[0]])
        return None if n is None else n[1]

    def add(self, ri, rv, payload) -> None:
        if self.root is None:
            self.root = self._chain(ri, rv, 0, payload)
            return
        n = self.root
        parent = None
        for j, (i, v) in enumerate(zip(ri, rv, strict=True)):
            if n[0] == "L" or n[0] != i:
                raise RuntimeError("impure step: the read path disagrees with the tree")
            kid = n[1].get(v)
            if kid is None:
                n[1][v] = self._chain(ri, rv, j + 1, payload)
                return
            parent = n
            n = kid
        del parent
        raise RuntimeError("the path already existed")

    def _chain(self, ri, rv, j, payload):
        self.leaves += 1
        node: list | tuple = ("L", payload)
        for i, v in zip(reversed(ri[j:]), reversed(rv[j:]), strict=True):
            node = [i, {v: node}]
            self.nodes += 1
        return node


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="upstream-6.14")
    ap.add_argument("--mutant")
    ap.add_argument("--bounds", default="small")
    ap.add_argument("--max-states", type=int)
    ap.add_argument("--compare", action="store_true")
    o = ap.parse_args()
    MU.load_all()
    pol = MU.get(o.mutant).build() if o.mutant else P.get(o.policy)
    b, _ = CK.adapt_bounds(CK.BOUNDS[o.bounds], pol.supports)
    m = Model(b.config(), pol)
    m.check_invariants = True
    m.dedupe_lost = False
    feats = frozenset(b.features)
    ck = CK.Checker(m, b)
    canon = Canon(m)
    lr = Learner(m, feats)
    n = canon.size
    cpu_of = {}
    for f in m.layout.fields.values():
        if f.dim == CPU:
            for k in range(f.count):
                cpu_of[f.start + k] = k
    t_en, t_rec = Tree(), Tree()
    t_ap: dict[tuple, Tree] = {}
    calls = {"enabled": 0, "apply": 0, "recover": 0}
    reads = {"enabled": 0, "apply": 0, "recover": 0}
    one_cpu = 0
    pos = ck.budget_pos
    slot_of = ck.budget_slots()
    switch_slot = pos.get("switch", -1)
    key0 = canon.key(m.new_state()) + ck.budget_init
    ids = {key0: 0}
    keys = [key0]
    frontier = [0]
    transitions = 0
    depth = 0
    t0 = time.perf_counter()
    vio_found = None
    while frontier and vio_found is None:
        nxt = []
        for sid in frontier:
            key = keys[sid]
            st = list(key[:n])
            budgets = key[n:]
            calls["enabled"] += 1
            acts = t_en.get(st)
            if acts is None:
                ri, rv, acts = lr.enabled(st)
                t_en.add(ri, rv, acts)
                reads["enabled"] += len(ri)
            for a in acts:
                bud = budgets
                i = (switch_slot if st[m.cur[a[1]]] else -1) if a[0] == SCHED else \
                    slot_of.get(a[0], -1)
                if i >= 0:
                    if not budgets[i]:
                        continue
                    bb = bytearray(budgets)
                    bb[i] -= 1
                    bud = bytes(bb)
                calls["apply"] += 1
                tr = t_ap.setdefault(a, Tree())
                leaf = tr.get(st)
                if leaf is None:
                    ri, rv, wi, wv, vio = lr.apply(st, a)
                    leaf = (wi, wv, vio)
                    tr.add(ri, rv, leaf)
                    reads["apply"] += len(ri)
                    cpus = {cpu_of[x] for x in (*ri, *wi) if x in cpu_of}
                    if len(cpus) <= 1:
                        one_cpu += 1
                wi, wv, vio = leaf
                s = st.copy()
                for x, y in zip(wi, wv, strict=True):
                    s[x] = y
                transitions += 1
                if vio >= 0:
                    vio_found = lr.violations[vio]
                    break
                k2 = canon.key(s) + bud
                if k2 in ids:
                    continue
                calls["recover"] += 1
                r = t_rec.get(s)
                if r is None:
                    ri, rv, r = lr.recover(s)
                    t_rec.add(ri, rv, r)
                    reads["recover"] += len(ri)
                if r >= 0:
                    vio_found = lr.violations[r]
                    break
                ids[k2] = len(keys)
                keys.append(k2)
                nxt.append(len(keys) - 1)
            if vio_found is not None:
                break
            if o.max_states and len(keys) >= o.max_states:
                break
        if o.max_states and len(keys) >= o.max_states:
            break
        frontier = nxt
        if frontier:
            depth += 1
    dt = time.perf_counter() - t0
    leaves_ap = sum(t.leaves for t in t_ap.values())
    print(f"policy {pol.name} bounds {b.name}: {len(keys):,} states, {transitions:,} "
          f"transitions, depth {depth}, {dt:.1f} s, violation {vio_found}")
    print(f"state size {n} fields, {len(t_ap)} distinct actions")
    for unit, leaves in (("enabled", t_en.leaves), ("apply", leaves_ap),
                         ("recover", t_rec.leaves)):
        c = calls[unit]
        print(f"  {unit:8s} calls {c:>11,}  distinct read paths {leaves:>9,} "
              f"({leaves / max(c, 1):.2%} of calls)  reads per path "
              f"{reads[unit] / max(leaves, 1):.1f}")
    print(f"  apply paths touching one CPU's fields only: {one_cpu / max(leaves_ap, 1):.1%}")
    nodes = t_en.nodes + t_rec.nodes + sum(t.nodes for t in t_ap.values())
    print(f"  tree nodes {nodes:,}")
    if o.compare:
        r = CK.Checker(m, b, max_states=o.max_states).run()
        print(f"python checker: {r.states:,} states, {r.transitions:,} transitions, "
              f"depth {r.depth}, violation {r.violation}")


if __name__ == "__main__":
    main()
