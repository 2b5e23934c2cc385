"""The native checker engine: the same search as ``Checker``, in Rust.

``NativeChecker`` is a ``Checker`` whose ``run`` hands the breadth-first
loop to ``kvmctx._native.Search``. The Rust core holds no model of its own:
it asks this package's ``Learner`` (kvmctx.engines.learn) to run the Python
model on every state it has no answer for, and learns from each run a path
of a decision tree over the fields that run read. docs/engine.md explains
the design and measures it.

Counterexamples are rebuilt in Python exactly as the Python engine does
(``Checker._path`` replays the canonical chain with real labels), so stories,
``--out`` files and ``kvmctx replay`` do not depend on the engine.
"""

from __future__ import annotations

import time
from typing import Any

from kvmctx.engines.checker import Checker, CheckResult
from kvmctx.engines.learn import Learner, Unsupported
from kvmctx.model.machine import SCHED

try:
    from kvmctx import _native
except ImportError as e:  # pragma: no cover - exercised when the build is missing
    _native = None
    IMPORT_ERROR = ("kvmctx._native is missing: `pip install .` builds it where a Rust "
                    "toolchain (cargo) is installed" if "_native" in str(e) else str(e))
else:
    IMPORT_ERROR = ""

ENGINES = ("native", "python")


def available() -> bool:
    return _native is not None


class NativeUnavailable(Exception):
    """The native engine cannot run this check; the message says why, in one line."""


class NativeChecker(Checker):
    def __init__(self, *args: Any, jobs: int = 1, **kw: Any) -> None:
        if _native is None:
            raise NativeUnavailable(f"the native engine is not built ({IMPORT_ERROR})")
        super().__init__(*args, **kw)
        self.jobs = max(1, jobs)
        self.stats: dict[str, int] = {}

    def _search(self) -> Any:
        m = self.m
        pos = self.budget_pos
        slot = self.budget_slots()
        slot_of = [-1] * (max(slot, default=0) + 1)
        for kind, i in slot.items():
            slot_of[kind] = i
        self.learner = Learner(m, self.features)
        return _native.Search(self.learner, self.canon.key, self.canon.tables(),
                              self.budget_init, SCHED, list(m.cur), pos.get("switch", -1),
                              slot_of)

    def run(self) -> CheckResult:
        m = self.m
        t0 = time.perf_counter()
        search = self._search()
        key0 = self.canon.key(m.new_state()) + self.budget_init
        mem = self.max_memory_mb if self.max_memory_mb is not None else float("inf")
        try:
            r = search.run(key0, self.bounds.depth, self.max_states, float(mem), self.jobs,
                           self.progress)
        except Unsupported as e:
            raise NativeUnavailable(f"a model step cannot run on the native engine: {e}") \
                from None
        except _native.ImpureStep as e:
            raise NativeUnavailable(
                f"a model step is not a function of the state alone ({e})") from None
        self.stats = dict(search.stats())
        seconds = time.perf_counter() - t0
        res = CheckResult(m.policy.name, self.mutant, self.bounds, r["states"],
                          r["transitions"], r["depth"], r["complete"], seconds, None, [],
                          r["stop_reason"], r["peak_rss_mb"])
        if r["violation"] is not None:
            v = self.learner.violations[r["violation"]]
            chain = list(search.chain(r["violation_parent"]))
            res.path = self._path_from_chain(chain, v.invariant)
            res.violation = {"invariant": v.invariant,
                             "message": self.path_message or v.message}
        return res
