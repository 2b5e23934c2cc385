"""The mutation test's explanations name mutants that still exist.

Explanation keys name a function and the dropped statement's place in it
(``drop:host:fpsimd_flush_cpu_state:2``); an edit to that function can shift
them, and a stale key would silently explain a different statement or none."""

from __future__ import annotations

from kvmctx.engines import mutation as MT


def test_every_explained_survivor_is_a_generated_mutant() -> None:
    for policy, explained in MT.EXPLANATIONS.items():
        ids = {s.id for s in MT.generate(policy)}
        stale = sorted(set(explained) - ids)
        assert not stale, f"{policy}: explanations for mutants that no longer exist: {stale}"


def test_explained_drops_still_drop_a_state_write() -> None:
    """Each explained dropped statement is still a write to the state (what the
    explanations talk about), not a line that moved under the key."""
    for policy, explained in MT.EXPLANATIONS.items():
        specs = {s.id: s for s in MT.generate(policy)}
        for key in explained:
            if key.startswith("drop:"):
                assert specs[key].text.lstrip().startswith("s["), (key, specs[key].text)
