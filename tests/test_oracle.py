"""The oracle lower bound: optimal by exhaustive search, never beaten by a policy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import examples
from kvmctx import api
from kvmctx import policies as P
from kvmctx.engines.oracle import EVICT, USE, FpTrace, brute_force_min_cost, oracle_counters
from kvmctx.model import counters as C

events = st.lists(
    st.one_of(
        st.tuples(st.just(USE), st.integers(0, 1), st.integers(1, 3), st.integers(0, 1)),
        st.tuples(st.just(EVICT), st.integers(0, 1), st.just(0), st.just(0)),
    ),
    min_size=1, max_size=9,
)


@settings(max_examples=examples(300), deadline=None)
@given(evs=events)
def test_greedy_schedule_is_the_cheapest_safe_schedule(evs):
    """On small FPSIMD-only workloads the oracle's bytes equal an exhaustive search."""
    size = {1: 520, 2: 520, 3: 520}
    fb = [520] * 4
    ctr = oracle_counters(FpTrace(list(evs)), fb, fb, 2)
    assert ctr[C.BYTES_SAVED] + ctr[C.BYTES_RESTORED] == brute_force_min_cost(list(evs), 2, size)
    assert ctr[C.GUEST_FP_TRAPS] == 0


def test_a_hand_trace():
    # c1 writes on CPU0, c2 evicts it (save c1, restore c2), c1 back (save c2, restore c1)
    evs = [(USE, 0, 1, 1), (USE, 0, 2, 1), (USE, 0, 1, 0)]
    ctr = oracle_counters(FpTrace(evs), [520] * 3, [520] * 3, 1)
    assert (ctr[C.RESTORES], ctr[C.SAVES]) == (3, 2)
    # A read-only context is never saved.
    ctr = oracle_counters(FpTrace([(USE, 0, 1, 0), (USE, 0, 2, 0), (USE, 0, 1, 0)]),
                         [520] * 3, [520] * 3, 1)
    assert (ctr[C.RESTORES], ctr[C.SAVES]) == (3, 0)


@pytest.mark.parametrize("scenario", ["default", "idle-guest", "mmio-heavy", "hpc-sve",
                                      "crypto-host", "kvm-stress", "sme-host", "fp-stress"])
def test_no_policy_beats_the_oracle(scenario):
    for name in P.names():
        r = api.run(name, scenario, seed=4, events=6000)
        if r.metrics()["violations"]:
            continue  # a broken design may "save" work by losing state: not a bound
        # The bound for exactly the workload this design ran (some designs run an
        # adapted one: no SVE on arm32, no vCPU SVE before v5.2...).
        o = api.run_oracle(scenario, seed=4, events=6000, like=name)
        assert o.metrics()["fp_traps"] == 0
        low = o.metrics()["bytes_saved"] + o.metrics()["bytes_restored"]
        m = r.metrics()
        assert m["bytes_saved"] + m["bytes_restored"] >= low, name
        assert r.cycles()["total"] >= o.cycles()["total"], name


def test_predictor_table_shape_and_perfect_predictor():
    rows = api.predictor_table("default", seed=1, events=8000)
    by = {r["predictor"]: r for r in rows}
    perfect = by["perfect"]
    assert perfect["fp"] == 0 and perfect["fn"] == 0 and perfect["accuracy"] == 1.0
    assert by["oracle (lower bound)"]["cycles"] <= perfect["cycles"]
    for kind in ("last-trap", "counter", "ewma"):
        r = by[kind]
        assert r["tp"] + r["fp"] + r["tn"] + r["fn"] == r["predictions"] > 0
        assert r["violations"] == 0
        assert r["gap_to_perfect"] >= 0


def test_oracle_moves_za_and_streaming_state_only_while_they_are_live():
    """SMSTART makes the state streaming Z/P (at the streaming VL) plus ZA; a syscall
    leaves streaming mode but keeps ZA; SMSTOP drops both."""
    from kvmctx.engines.oracle import DISCARD, EVICT

    fp, sve, ssve, za = [520] * 2, [520, 1000], [520, 2000], [0, 4160]
    ev = [(USE, 0, 1, 1 | 2 | 4), (EVICT, 0, 0, 0), (USE, 0, 1, 0),   # save + restore
          (DISCARD, 0, 1, 0), (USE, 0, 1, 1), (EVICT, 0, 0, 0), (USE, 0, 1, 0),
          (USE, 0, 1, 1 | 8), (EVICT, 0, 0, 0), (USE, 0, 1, 0)]
    ctr = oracle_counters(FpTrace(ev), fp, sve, 1, ssve, za)
    assert ctr[C.BYTES_SAVED] == (2000 + 4160) + (520 + 4160) + 520
    assert ctr[C.ZA_SAVES] == 2 and ctr[C.ZA_RESTORES] == 2
