"""Which engine runs a check: the native core (default, when built) or Python.

Both explore the same states in the same order and agree exactly (states,
transitions, depth, the counterexample); tests/test_native.py holds them to
it. The Python engine (``Checker``) is the reference and the fallback:

- the native module was not built (``pip install`` without a Rust toolchain):
  one line says so, the Python engine runs;
- a model step does something the recorder cannot follow, or depends on
  something outside the state (kvmctx.engines.learn): one line names the
  step and the reason, and the check runs again on the Python engine.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from kvmctx.engines.checker import Bounds, Checker, CheckResult
from kvmctx.engines.native import IMPORT_ERROR, NativeChecker, NativeUnavailable, available
from kvmctx.model.machine import Model

ENGINES = ("auto", "native", "python")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def resolve(engine: str) -> str:
    """The engine that will run: 'native' or 'python' (ValueError if unknown)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if engine == "auto":
        return "native" if available() else "python"
    return engine


def check(model: Model, bounds: Bounds, *, engine: str = "auto", jobs: int = 1,
          notice: Callable[[str], None] | None = _stderr, **kw: Any) -> CheckResult:
    """Run one check on the chosen engine, falling back to Python as described above."""
    say = notice or (lambda _line: None)
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")
    if engine != "python":
        if not available():
            say(f"kvmctx: native engine unavailable ({IMPORT_ERROR}); using the Python engine")
        else:
            ch = NativeChecker(model, bounds, jobs=jobs, **kw)
            try:
                res = ch.run()
            except NativeUnavailable as e:
                say(f"kvmctx: {e}; running the Python engine instead")
                # The failed step may have stopped half-way: reset its execution context.
                model.vio.clear()
                model.irqs_off = model.in_softirq = False
            else:
                res.engine = "native"
                res.engine_stats = ch.stats
                return res
    return Checker(model, bounds, **kw).run()
