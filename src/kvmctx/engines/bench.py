"""`kvmctx bench`: this machine's speed for the simulator and the checker.

Everything runs in one process, one after the other, so the ratios compare
like with like:

* simulator events/s on the default scenario, invariants off and on, for two
  policies;
* the empty-loop floor: the very event stream of that run (recorded first),
  drawn again from the same random generator and dispatched through a table
  to handlers that do nothing. Simulator/floor says how much of the time is
  the model rather than Python's loop and random numbers;
* SimPy on the same number of events (one process per CPU, each event a
  timeout whose callback dispatches the recorded action to the same no-op
  handlers): what a Python user would reach for first;
* checker distinct states/s and state count at a named bound, with the peak
  RSS growth per million states and per state; for the native engine also
  ``--jobs 2`` against ``--jobs 1`` and the Python engine on the same first
  states (docs/engine.md).
"""

from __future__ import annotations

import gc
import platform
import random
import time
from collections.abc import Callable
from typing import Any

from kvmctx import __version__

POLICIES = ("upstream-6.14", "arm64-4.17")


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def sim_rate(policy: str, events: int, invariants: bool, seed: int = 1) -> tuple[float, Any]:
    from kvmctx import api

    gc.collect()
    t0 = time.perf_counter()
    r = api.run(policy, "default", seed=seed, events=events, invariants=invariants)
    return _rate(events, time.perf_counter() - t0), r


def recorded_stream(policy: str, events: int, seed: int = 1) -> list[tuple[int, int, int]]:
    """Every action the simulator applies on the default scenario, in order."""
    from kvmctx import api
    from kvmctx.engines.simulator import Simulator
    from kvmctx.model.machine import Model

    pol = api.resolve_policy(policy)
    _name, w = api.resolve_workload("default")
    w, _ = api.adapt_workload(pol, w, {})
    trace: list = []
    Simulator(Model(w.model_config(), pol), w, seed=seed, invariants=False,
              trace=trace).run(events)
    return [a for _ev, a, _n in trace]


def floor_rate(actions: list[tuple[int, int, int]], events: int, ncpu: int,
               seed: int = 1) -> float:
    """The empty loop: per event, the simulator's two draws (CPU, decision),
    then the recorded actions of that many events dispatched to no-ops."""
    handlers: list[Callable[[list[int], tuple[int, int, int]], None]] = \
        [lambda s, a: None] * 64
    state = [0] * 64
    rng = random.Random(seed)
    rnd = rng.random
    bits = ncpu.bit_length()
    per_event = max(1, len(actions) // max(1, events))
    n = len(actions)
    gc.collect()
    t0 = time.perf_counter()
    i = 0
    for _ev in range(events):
        k = rng.getrandbits(bits)
        while k >= ncpu:
            k = rng.getrandbits(bits)
        rnd()
        for _ in range(per_event):
            a = actions[i]
            handlers[a[0]](state, a)
            i += 1
            if i == n:
                i = 0
    return _rate(events, time.perf_counter() - t0)


def simpy_rate(actions: list[tuple[int, int, int]], events: int, ncpu: int,
               seed: int = 1) -> float | None:
    """The same dispatch as the floor, driven by SimPy processes (one per CPU)."""
    try:
        import simpy
    except ImportError:  # pragma: no cover - simpy is a dependency
        return None
    handlers: list[Callable[[list[int], tuple[int, int, int]], None]] = \
        [lambda s, a: None] * 64
    state = [0] * 64
    rng = random.Random(seed)
    per_event = max(1, len(actions) // max(1, events))
    n = len(actions)
    env = simpy.Environment()
    left = [events]
    pos = [0]

    def cpu(env: Any) -> Any:
        rnd = rng.random
        while left[0] > 0:
            yield env.timeout(rnd())
            left[0] -= 1
            i = pos[0]
            for _ in range(per_event):
                a = actions[i]
                handlers[a[0]](state, a)
                i += 1
                if i == n:
                    i = 0
            pos[0] = i

    for _ in range(ncpu):
        env.process(cpu(env))
    gc.collect()
    t0 = time.perf_counter()
    env.run()
    return _rate(events, time.perf_counter() - t0)


def _check(bounds_name: str, policy: str, max_states: int | None, engine: str,
           jobs: int = 1) -> tuple[Any, float]:
    """One check; (result, RSS before it in MB)."""
    from kvmctx import api
    from kvmctx.engines import checker as CK
    from kvmctx.engines import engine as EN
    from kvmctx.model.machine import Model

    pol = api.resolve_policy(policy)
    bounds = CK.adapt_bounds(CK.BOUNDS[bounds_name], pol.supports)[0]
    model = Model(bounds.config(), pol)
    gc.collect()
    rss0 = CK._rss_mb()
    res = EN.check(model, bounds, engine=engine, jobs=jobs, max_states=max_states)
    return res, rss0


def checker_figures(bounds_name: str, policy: str = "upstream-6.14",
                    max_states: int | None = None, python_states: int = 500_000
                    ) -> dict[str, Any]:
    """The checker on the default engine (the native one when built), then the ratios
    that matter: against the Python engine on the same first ``python_states``
    states, and ``--jobs 2`` against ``--jobs 1``. The native runs come first so the
    Python engine's freed memory does not hide in their RSS growth."""
    from kvmctx.engines import engine as EN

    engine = EN.resolve("auto")
    res, rss0 = _check(bounds_name, policy, max_states, "auto")
    grow = max(0.0, res.peak_rss_mb - rss0)
    out: dict[str, Any] = {
        "checker_engine": engine,
        "checker_bounds": bounds_name,
        "checker_policy": policy,
        "checker_states": res.states,
        "checker_transitions": res.transitions,
        "checker_complete": res.complete,
        "checker_seconds": round(res.seconds, 3),
        "checker_states_per_s": round(res.states_per_s),
        "checker_peak_rss_mb": round(res.peak_rss_mb, 1),
        "checker_rss_mb_per_million_states": round(grow / max(1, res.states) * 1e6, 1),
        "checker_bytes_per_state": round(grow * 2**20 / max(1, res.states), 1),
    }
    if engine == "native":
        out["checker_python_runs"] = sum(v for k, v in res.engine_stats.items()
                                         if k.startswith("python_"))
        r2, _ = _check(bounds_name, policy, max_states, "native", jobs=2)
        out["checker_jobs2_states_per_s"] = round(r2.states_per_s)
        out["checker_jobs2_speedup"] = round(res.seconds / r2.seconds, 3) if r2.seconds else None
        cap = min(python_states, max_states or python_states)
        rn, _ = _check(bounds_name, policy, cap, "native")
        out["checker_states_per_s_native_capped"] = round(rn.states_per_s)
    else:
        cap = min(python_states, max_states or python_states)
        rn = None
    rp, _ = _check(bounds_name, policy, cap, "python")
    out["checker_python_states"] = rp.states
    out["checker_states_per_s_python"] = round(rp.states_per_s)
    if rn is not None and rp.states_per_s:
        out["checker_native_python_ratio"] = round(rn.states_per_s / rp.states_per_s, 2)
    return out


def run_bench(quick: bool = False, progress: Callable[[str], None] | None = None
              ) -> dict[str, Any]:
    say = progress or (lambda _msg: None)
    events = 40_000 if quick else 300_000
    out: dict[str, Any] = {"kvmctx_version": __version__, "quick": quick,
                           "python": platform.python_version(),
                           "machine": platform.machine(), "events": events}
    per_policy: dict[str, dict[str, float]] = {}
    first = None
    for pol in POLICIES:
        say(f"simulator: {pol}, invariants off")
        off, r = sim_rate(pol, events, False)
        say(f"simulator: {pol}, invariants on")
        on, _ = sim_rate(pol, events, True)
        per_policy[pol] = {"events_per_s": round(on), "events_per_s_no_invariants": round(off)}
        if first is None:
            first = (off, on, r)
    assert first is not None
    off, on, r = first
    ncpu = r.workload.cpus
    say("floor: recording the event stream")
    actions = recorded_stream(POLICIES[0], events)
    say("floor: empty dispatch loop")
    floor = floor_rate(actions, events, ncpu)
    say("SimPy: the same dispatch")
    simpy = simpy_rate(actions, events, ncpu)
    out.update({
        "sim_policy": POLICIES[0],
        "sim_events_per_s": round(on),
        "sim_events_per_s_no_invariants": round(off),
        "floor_events_per_s": round(floor),
        "sim_floor_ratio": round(off / floor, 4) if floor else None,
        "simpy_events_per_s": round(simpy) if simpy else None,
        "sim_simpy_ratio": round(off / simpy, 3) if simpy else None,
        "actions_per_event": round(len(actions) / events, 3),
        "per_policy": per_policy,
    })
    # --quick: the same bounds, stopped at 150k states (an incomplete run).
    say("checker: upstream-6.14 at --bounds standard" + (", first 150k states" if quick else "")
        + "; then --jobs 2, and the Python engine on the first states")
    out.update(checker_figures("standard", max_states=150_000 if quick else None,
                               python_states=50_000 if quick else 500_000))
    return out
