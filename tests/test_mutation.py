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


def test_each_explanation_is_for_the_statement_it_names() -> None:
    """An edit inside a function shifts the ids after it; an explanation carries the
    statement (or flag) it was written for, and it must still be that one."""
    for policy, explained in MT.EXPLANATIONS.items():
        specs = {s.id: s for s in MT.generate(policy)}
        for key, (text, why) in explained.items():
            assert specs[key].text == text, (key, specs[key].text, text)
            assert len(why) > 20
            if key.startswith("drop:"):
                assert text.lstrip().startswith(("s[", "_", "H.", "fpsimd", "sme")), key


def test_a_stale_explanation_is_not_shown_as_valid() -> None:
    spec = MT.MutantSpec("drop:host:f:1", "drop", "kvmctx.model.host", "f", 1, "s[1] = 0")
    rep = MT.MutationReport("p", "b", [MT.MutantResult(spec, "survived")])
    MT.attach_explanations(rep, {"drop:host:f:1": ("s[2] = 0", "equivalent: x")})
    assert rep.results[0].explanation.startswith("stale explanation")
    MT.attach_explanations(rep, {"drop:host:f:1": ("s[1] = 0", "equivalent: x")})
    assert rep.results[0].explanation == "equivalent: x"
