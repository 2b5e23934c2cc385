"""Learning the model's steps as read-keyed decision trees (the native engine's input).

The native checker never holds a copy of the model. It runs the Python model
(``Model.enabled``, ``Model.apply``, ``Model.check_recoverable``: the policies
and the host machinery as written) on a *recording state*, which notes every
field a step reads, in order, with the value it saw, and every field it
writes. Because a step is a deterministic function of the state (the Python
checker relies on that already: it stores states as bytes and expands them in
any order), the same values at the same read fields lead to the same reads
next and to the same writes and violations. So one recorded run is a path in
a decision tree: branch on the first field read, then on the next, ..., and
at the leaf the writes. LTSmin's PINS cache keys a transition group on a fixed
read set; here the read set is learned per path, so a branch that reads a
field only in some states does not widen every key.

Soundness rests on three facts, each checked where it can be:

- A read of a field the step already wrote sees the written value, which is a
  function of earlier reads; so only first reads of unwritten fields branch,
  and all of them see the pre-step state. The native walk therefore reads the
  pre-step state only, and applies the leaf's writes at the end.
- Determinism: every step the learner records runs twice on the same state
  and must do exactly the same both times (reads, writes, violation), and a
  recorded path must agree with the tree where they overlap (same field read
  after the same values). Either failure means the step depends on something
  outside the state (a counter in a Python object, a random draw); the engine
  names the step and runs the Python engine instead rather than guess. (The
  Python engine assumes purity too: it stores states as bytes and expands them
  in any order.)
- The recording state supports only what the model uses, ``s[i]`` with an
  int index, reads and writes. Anything else (a slice, iteration, ``len``,
  passing it to ``bytes``) raises ``Unsupported`` naming the step, and the
  engine falls back to the Python engine with that one line.
"""

from __future__ import annotations

from typing import Any

from kvmctx.model.machine import Model


class Unsupported(Exception):
    """A step used the state in a way the recorder cannot follow, or gave two
    different answers on the same state (it depends on something outside it)."""


class RecordingState:
    """A model state that records first reads (in order, with values) and writes."""

    __slots__ = ("_base", "_reads", "_vals", "_written", "_seen")

    def __init__(self, base: list[int] | bytes) -> None:
        self._base = base
        self._reads: list[int] = []
        self._vals: list[int] = []
        self._written: dict[int, int] = {}
        self._seen: set[int] = set()

    def __getitem__(self, i: Any) -> int:
        if type(i) is not int or i < 0:
            raise Unsupported(f"the state was indexed with {i!r} (only s[i], i >= 0, "
                              "is recorded)")
        w = self._written
        if i in w:
            return w[i]
        v = self._base[i]
        if i not in self._seen:
            self._seen.add(i)
            self._reads.append(i)
            self._vals.append(v)
        return v

    def __setitem__(self, i: Any, v: int) -> None:
        if type(i) is not int or i < 0:
            raise Unsupported(f"the state was written at {i!r} (only s[i] = v, i >= 0, "
                              "is recorded)")
        if type(v) is not int:
            if isinstance(v, bool):
                v = int(v)
            else:
                raise Unsupported(f"a step stored {v!r} (type {type(v).__name__}) in the "
                                  "state; fields hold ints")
        self._written[i] = v

    def __len__(self) -> int:
        raise Unsupported("a step took len() of the state")

    def __iter__(self):
        raise Unsupported("a step iterated over the state")

    def copy(self):
        raise Unsupported("a step copied the state")

    @property
    def reads(self) -> tuple[list[int], list[int]]:
        return self._reads, self._vals

    def writes(self) -> tuple[list[int], list[int]]:
        w = self._written
        return list(w), list(w.values())


class Learner:
    """Runs the Python model on recording states for the native engine.

    Every call returns the read path (fields and values, in first-read order)
    and what the step did. Violations are kept here, in ``violations``, and
    the native side refers to them by index (their messages are strings).
    """

    def __init__(self, m: Model, features: frozenset[str]) -> None:
        self.m = m
        self.features = features
        self.violations: list[Any] = []

    def _take_vio(self) -> int:
        vio = self.m.vio
        if not vio:
            return -1
        self.violations.append(vio[0])
        vio.clear()
        return len(self.violations) - 1

    def _twice(self, what: str, run: Any) -> Any:
        """Run a recording twice; both runs must see and do the same."""
        first = run()
        v1 = self._vio_text()
        second = run()
        v2 = self._vio_text()
        if first != second or v1 != v2:
            raise Unsupported(f"{what} did different things on the same state: it depends "
                              "on something outside the state")
        return first

    def _vio_text(self) -> tuple[str, str] | None:
        vio = self.m.vio
        out = (vio[0].invariant, vio[0].message) if vio else None
        if len(vio) > 1:
            del vio[1:]
        return out

    def enabled(self, base: list[int] | bytes) -> tuple[list[int], list[int], list[tuple]]:

        def run() -> tuple:
            r = RecordingState(base)
            acts = self.m.enabled(r, self.features)
            if r._written:
                raise Unsupported("Model.enabled() wrote the state")
            ri, rv = r.reads
            return ri, rv, [tuple(a) for a in acts]

        return self._twice("Model.enabled()", run)

    def apply(self, base: list[int] | bytes, a: tuple[int, int, int]
              ) -> tuple[list[int], list[int], list[int], list[int], int]:
        m = self.m

        def run() -> tuple:
            r = RecordingState(base)
            m.vio.clear()
            m.apply(r, a)
            ri, rv = r.reads
            wi, wv = r.writes()
            return ri, rv, wi, wv

        out = self._twice(f"the step {m.action_text(base, a)!r} (action {a})", run)
        return (*out, self._take_vio())

    def recover(self, base: list[int] | bytes) -> tuple[list[int], list[int], int]:
        m = self.m

        def run() -> tuple:
            r = RecordingState(base)
            m.vio.clear()
            m.check_recoverable(r)
            return r.reads

        ri, rv = self._twice("Model.check_recoverable()", run)
        return ri, rv, self._take_vio()
