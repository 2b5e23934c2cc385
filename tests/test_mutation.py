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


def test_checks_are_not_mutants_but_state_writes_around_them_are() -> None:
    """A dropped check (m.violate, a WARN_ON helper, the trapped-SME-access check)
    weakens the specification and can only hide violations: not a faulty design."""
    specs = MT.generate("upstream-6.14")
    texts = [s.text for s in specs if s.kind == "drop"]
    assert not [t for t in texts if "m.violate(" in t or t.startswith(("_bind_warn(",
                                                                        "_host_sme_access("))]
    checks = MT._check_functions(["kvmctx.model.host"])
    assert {"_bind_warn", "_host_sme_access", "host_sme_access"} <= checks
    # functions that check *and* write stay mutable, statement by statement
    assert not checks & {"do_sve_acc", "fpsimd_save_user_state", "fpsimd_bind_task_to_cpu"}
    fns = {s.function for s in specs if s.kind == "drop"}
    assert {"do_sve_acc", "fpsimd_save_user_state", "fpsimd_bind_task_to_cpu"} <= fns


def test_a_statement_only_a_feature_bounds_reaches_is_not_unreached() -> None:
    """FPMR's reload after SVCR runs only with FEAT_FPMR (host-fpmr), not at the small
    standard-like bounds: it must count as executed, so it is run and tried there."""
    import importlib
    import inspect

    spec = next(s for s in MT.generate("upstream-6.14") if s.kind == "drop"
                and s.function == "task_fpsimd_load" and "FPMR after SVCR" in s.text)
    f = inspect.getsourcefile(importlib.import_module(spec.module))
    from kvmctx.catalogue import mutants as MU

    MU.names()
    only_small = MT.executed_lines("upstream-6.14", "host-signals", max_states=5_000,
                                   sim_events=400, also=())
    assert (f, spec.line) not in only_small
    with_feature = MT.executed_lines("upstream-6.14", "host-signals", max_states=5_000,
                                     sim_events=400, also=("host-fpmr",))
    assert (f, spec.line) in with_feature
