"""``kvmctx check``, ``kvmctx replay``, ``kvmctx mutants``: the exhaustive checker's CLI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from kvmctx import policies as P
from kvmctx.catalogue import mutants as MU
from kvmctx.cli.common import err, fail, out, print_json
from kvmctx.engines import checker as CK
from kvmctx.engines import engine as EN
from kvmctx.engines import native as NA
from kvmctx.engines import story as ST
from kvmctx.model.config import FEATURES, SYSREG_MODES
from kvmctx.model.machine import Model
from kvmctx.policies.base import Policy

# Mutant modules register their own named bounds (host-*, ...): load them so
# every named bounds is valid for `check --bounds` and listed in its help.
MU.load_all()


def _parse_budgets(text: str | None) -> tuple[tuple[str, int], ...] | None:
    if text is None:
        return None
    out: list[tuple[str, int]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            fail(f"--budget: {part!r} is not CLASS=N; classes: {', '.join(CK.BUDGET_CLASSES)}")
        name, _, val = part.partition("=")
        name = name.strip()
        if name not in CK.BUDGET_CLASSES:
            fail(f"--budget: unknown class {name!r}; valid: {', '.join(CK.BUDGET_CLASSES)}")
        try:
            n = int(val)
        except ValueError:
            fail(f"--budget: {name}={val!r} is not an integer")
        if not 0 <= n <= CK.BUDGET_MAX:
            fail(f"--budget: {name}={n} is not in 0..{CK.BUDGET_MAX}")
        out.append((name, n))
    return tuple(sorted(out))


def resolve_bounds(name: str, cpus: int | None, tasks: int | None, sve_tasks: int | None,
                   vcpus: int | None, features: str | None, depth: int | None,
                   budget: str | None, vcpu_sve: bool | None = None,
                   sysregs: str | None = None) -> CK.Bounds:
    if name not in CK.BOUNDS:
        fail(f"unknown bounds {name!r}; valid: {', '.join(CK.BOUNDS)}")
    b = CK.BOUNDS[name]
    kw: dict[str, Any] = {}
    if features is not None:
        feats = [f.strip() for f in features.split(",") if f.strip()]
        bad = [f for f in feats if f not in FEATURES]
        if bad:
            fail(f"--features: unknown feature {bad[0]!r}; valid: {', '.join(FEATURES)}")
        kw["features"] = frozenset(feats)
    # The same ranges as a counterexample file's bounds (CK.SIZE_RANGES).
    for key, val in (("cpus", cpus), ("vcpus", vcpus), ("sve_tasks", sve_tasks)):
        lo, hi = CK.SIZE_RANGES[key]
        if val is not None:
            if not lo <= val <= hi:
                fail(f"--{key.replace('_', '-')} {val} is not in {lo}..{hi}")
            kw[key] = val
    if tasks is not None:
        if not 0 <= tasks <= CK.TASKS_MAX:
            fail(f"--tasks {tasks} is not in 0..{CK.TASKS_MAX}")
        sve = sve_tasks if sve_tasks is not None else min(b.sve_tasks, tasks)
        if sve > tasks:
            fail(f"--sve-tasks {sve} is more than --tasks {tasks}")
        kw["fpsimd_tasks"] = tasks - sve
        kw["sve_tasks"] = sve
    if depth is not None:
        if not 1 <= depth <= CK.DEPTH_MAX:
            fail(f"--depth {depth} is not in 1..{CK.DEPTH_MAX}")
        kw["depth"] = depth
    bud = _parse_budgets(budget)
    if bud is not None:
        kw["budgets"] = bud
    if vcpu_sve is not None:
        kw["vcpu_sve"] = vcpu_sve
    if sysregs is not None:
        if sysregs not in SYSREG_MODES:
            fail(f"--sysregs {sysregs!r}; valid: {', '.join(SYSREG_MODES)}")
        kw["sysregs"] = sysregs
        kw["features"] = frozenset(kw.get("features", b.features)) | {"sysregs"}
    if kw:
        b = CK.Bounds(**{**b.__dict__, **kw, "name": name if not kw else f"{name}+custom"})
    return b


def resolve_policy(policy: str | None, mutant: str | None, policy_file: Path | None
                   ) -> tuple[Policy, dict[str, Any], str | None]:
    """The policy to check and a reference to it that a cex file can store."""
    chosen = sum(x is not None for x in (mutant, policy_file))
    if chosen > 1:
        fail("give at most one of --mutant and --policy-file")
    if mutant is not None:
        try:
            mu = MU.get(mutant)
        except KeyError:
            fail(f"unknown mutant {mutant!r}; valid: {', '.join(MU.names())}")
        return mu.build(), {"mutant": mutant}, mutant
    if policy_file is not None:
        try:
            pol = P.load_file(policy_file)
        except P.PolicyFileError as e:
            fail(str(e))
        return pol, {"policy_file": str(Path(policy_file).resolve())}, None
    name = policy or "upstream-6.14"
    try:
        return P.get(name), {"name": name}, None
    except KeyError:
        fail(f"unknown policy {name!r}; valid: {', '.join(P.names())}")


def policy_from_ref(ref: dict[str, Any]) -> tuple[Policy, str | None]:
    if "mutant" in ref:
        try:
            return MU.get(ref["mutant"]).build(), ref["mutant"]
        except KeyError:
            raise ST.CexError(f"unknown mutant {ref['mutant']!r} in the file") from None
    if "policy_file" in ref:
        try:
            return P.load_file(ref["policy_file"]), None
        except P.PolicyFileError as e:
            raise ST.CexError(str(e)) from None
    try:
        return P.get(ref.get("name", "")), None
    except KeyError:
        raise ST.CexError(f"unknown policy {ref.get('name')!r} in the file") from None


def replay_file(cex: Path) -> tuple[Model, list[ST.StepRecord], str | None]:
    """Load a saved counterexample and re-run it: (model, steps, the invariant the
    file says breaks). A file that cannot be used raises CexError, one line naming
    the field and what is valid (``kvmctx replay`` prints it, exit status 2)."""
    data = ST.load_cex(cex)
    try:
        pol, _ = policy_from_ref(data["policy"])
    except ST.CexError as e:
        raise ST.CexError(f"{cex}: {e}") from None
    try:
        b = CK.Bounds.from_dict(data["bounds"])
        model = Model(b.config(), pol)
    except ValueError as e:
        raise ST.CexError(f"{cex}: {e}") from None
    recs, _ = ST.replay(model, [tuple(s["action"]) for s in data["steps"]], b.features)
    want = (data.get("violation") or {}).get("invariant")   # load_cex checked its shape
    return model, recs, want


def _progress_printer(label: str):
    if not err.is_terminal:
        return None, None
    status = err.status(label)
    status.start()
    t0 = time.perf_counter()

    def upd(states: int, transitions: int, depth: int) -> None:
        dt = max(1e-9, time.perf_counter() - t0)
        status.update(f"{label}: {states:,} states, {transitions:,} transitions, depth {depth}, "
                      f"{states / dt:,.0f} states/s")

    return upd, status


def run_check(pol: Policy, bounds: CK.Bounds, max_states: int | None, mutant: str | None,
              label: str, quiet: bool = False, max_memory_mb: float | None = None,
              engine: str = "auto", jobs: int = 1) -> tuple[CK.CheckResult, Model]:
    bounds, notes = CK.adapt_bounds(bounds, pol.supports)
    try:
        model = Model(bounds.config(), pol)
    except ValueError as e:
        fail(str(e))
    upd, status = (None, None) if quiet else _progress_printer(label)
    try:
        res = EN.check(model, bounds, engine=engine, jobs=jobs, max_states=max_states,
                       progress=upd, mutant=mutant, max_memory_mb=max_memory_mb,
                       notice=lambda line: err.print(line, markup=False, highlight=False))
    finally:
        if status is not None:
            status.stop()
    res.notes = notes
    return res, model


def summary_table(res: CK.CheckResult) -> Table:
    t = Table(title=f"check {res.policy}" + (f" (mutant {res.mutant})" if res.mutant else "")
              + f" at bounds {res.bounds.name}", title_justify="left")
    for c in ("states", "transitions", "depth", "complete", "seconds", "states/s", "verdict"):
        t.add_column(c, justify="right")
    verdict = ("VIOLATION" if res.violation else "safe within bounds" if res.complete
               else f"incomplete ({res.stop_reason})")
    t.add_row(f"{res.states:,}", f"{res.transitions:,}", str(res.depth), str(res.complete),
              f"{res.seconds:.2f}", f"{res.states_per_s:,.0f}", verdict)
    t.caption = f"engine: {res.engine}"
    return t


def register(app: typer.Typer) -> None:
    register_mutation(app)

    @app.command()
    def check(
        policy: str | None = typer.Option(None, "--policy", "-p", help="Policy name."),
        mutant: str | None = typer.Option(None, help="A named mutant (see 'kvmctx mutants')."),
        policy_file: Path | None = typer.Option(None, help="A Python file defining POLICY."),
        bounds: str | None = typer.Option(
            None, help="Named bounds (default: standard, or a mutant's own bounds): "
                       + ", ".join(CK.BOUNDS)),
        cpus: int | None = typer.Option(None, help="Override: number of CPUs."),
        tasks: int | None = typer.Option(None, help="Override: number of host tasks."),
        sve_tasks: int | None = typer.Option(None, help="Override: how many of them use SVE."),
        vcpus: int | None = typer.Option(None, help="Override: number of vCPUs."),
        features: str | None = typer.Option(None, help="Override: comma list of features."),
        depth: int | None = typer.Option(None, help="Stop after this many steps."),
        budget: str | None = typer.Option(None, help="Override budgets, e.g. switch=3,softirq=2"),
        sysregs: str | None = typer.Option(None, help="Add deferred sysregs (seed 001) to the "
                                                      "bounds: eager, deferred or "
                                                      "deferred-stale."),
        max_states: int | None = typer.Option(None, help="Stop (incomplete) at this many states."),
        max_memory_mb: float | None = typer.Option(
            None, help="Stop (incomplete) when the process RSS passes this (default: 70% of "
                       "available memory)."),
        catalogue: bool = typer.Option(False, "--catalogue", help="Check every catalogue mutant."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
        out_path: Path | None = typer.Option(None, "--out", help="Save the counterexample."),
        engine: str = typer.Option("auto", help="Search engine: auto (native when built), "
                                                "native, or python (the reference)."),
        jobs: int = typer.Option(1, "--jobs", "-j", help="Native engine: threads expanding "
                                                         "each level (results do not depend "
                                                         "on it)."),
    ) -> None:
        """Explore every interleaving within bounds; print the shortest counterexample."""
        if engine not in EN.ENGINES:
            fail(f"--engine {engine!r}; valid: {', '.join(EN.ENGINES)}")
        if engine == "native" and not NA.available():
            fail(f"--engine native: the native engine is not built ({NA.IMPORT_ERROR})")
        if not 1 <= jobs <= 256:
            fail(f"--jobs {jobs} is not in 1..256")
        if max_states is not None and max_states < 1:
            fail("--max-states must be at least 1")
        if max_memory_mb is not None and max_memory_mb <= 0:
            fail("--max-memory-mb must be positive")
        if catalogue:
            _catalogue(json_out, max_states, engine, jobs)
            return
        pol, ref, mname = resolve_policy(policy, mutant, policy_file)
        if bounds is None:
            # An explicit --bounds wins; otherwise a mutant runs where its bug shows.
            bounds = (MU.get(mutant).bounds if mutant is not None else None) or "standard"
        b = resolve_bounds(bounds, cpus, tasks, sve_tasks, vcpus, features, depth, budget,
                           sysregs=sysregs)
        res, model = run_check(pol, b, max_states, mname, f"checking {pol.name}", json_out,
                               max_memory_mb, engine, jobs)
        recs: list[ST.StepRecord] = []
        if res.violation is not None:
            recs, _ = ST.replay(model, res.path, res.bounds.features)
            res.violation["steps"] = [
                {"action": list(r.action), "text": r.text, "cpu": r.cpu, "changes": r.changes}
                for r in recs]
            if out_path is not None:
                try:
                    ST.save_cex(out_path, ST.cex_payload(model, res, recs, ref))
                except OSError as e:
                    fail(f"cannot write {out_path}: {e.strerror or e}")
        if json_out:
            print_json(res.as_json())
        else:
            out.print(summary_table(res))
            for n in res.notes:
                out.print(f"adapted to {res.policy}: {n}")
            if res.violation is not None:
                out.print(ST.story_table(model, recs, "counterexample (shortest): "
                                         f"{res.violation['invariant']}"))
                out.print(f"[bold red]{res.violation['invariant']}[/bold red]: "
                          f"{res.violation['message']}")
                if out_path is not None:
                    out.print(f"saved to {out_path}; re-run it with: kvmctx replay {out_path}")
        if res.violation is not None:
            raise typer.Exit(1)
        if not res.complete:
            raise typer.Exit(3)

    @app.command()
    def replay(
        cex: Path = typer.Argument(..., help="A counterexample saved by 'kvmctx check --out'."),
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """Re-run a saved counterexample step by step; exit 1 if the violation reproduces."""
        try:
            model, recs, want = replay_file(cex)
        except (ST.CexError, KeyError, TypeError, ValueError) as e:
            fail(str(e) if isinstance(e, ST.CexError) else f"{cex}: malformed: {e}")
        got = recs[-1].violations if recs else []
        reproduced = bool(got) and (want is None or got[0]["invariant"] == want)
        if json_out:
            print_json({"reproduced": reproduced, "steps": len(recs),
                        "violation": got[0] if got else None,
                        "story": ST.story_text(model, recs)})
        else:
            out.print(ST.story_table(model, recs, f"replay of {cex}"))
            if reproduced:
                out.print(f"[bold red]reproduced[/bold red]: {got[0]['invariant']}: "
                          f"{got[0]['message']}")
            else:
                out.print("[green]did not reproduce[/green]: no violation at the last step")
        raise typer.Exit(1 if reproduced else 0)

    @app.command("mutants")
    def list_mutants(json_out: bool = typer.Option(False, "--json")) -> None:
        """List the named mutants: a base policy with one historical bug put back."""
        rows = [m.as_dict() for m in MU.all_mutants()]
        if json_out:
            print_json(rows)
            return
        t = Table(title="mutants", show_lines=True)
        for c in ("name", "base", "source", "catalogue", "invariant", "bug"):
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(r["name"], r["base"], r["source"], str(r["catalogue"] or ""),
                      r["invariant"], r["description"])
        out.print(t)


def _catalogue(json_out: bool, max_states: int | None, engine: str = "auto",
               jobs: int = 1) -> None:
    rows = []
    for mu in MU.catalogue():
        b = CK.BOUNDS[mu.bounds or "standard"]
        res, _ = run_check(mu.build(), b, max_states, mu.name, f"mutant {mu.name}", json_out,
                           engine=engine, jobs=jobs)
        found = res.violation is not None
        rows.append({"mutant": mu.name, "source": mu.source, "catalogue": mu.catalogue,
                     "bounds": b.name,
                     "invariant": res.violation["invariant"] if found else mu.invariant,
                     "expected_invariant": mu.invariant, "found": found,
                     "depth": res.depth if found else None, "states": res.states,
                     "seconds": round(res.seconds, 3)})
    # Entries of the catalogue the model cannot express are listed too, with the reason,
    # so a reader sees the whole catalogue and what a "found" column does not cover.
    gaps = [{"mutant": None, "source": None, "catalogue": n, "bounds": None, "invariant": None,
             "expected_invariant": None, "found": None, "depth": None, "states": None,
             "seconds": None, "not_expressible": why}
            for n, why in sorted(MU.NOT_EXPRESSED.items())]
    if json_out:
        print_json(sorted(rows + gaps, key=lambda r: r["catalogue"] or 0))
    else:
        t = Table(title="bug catalogue: each mutant puts one historical bug back",
                  title_justify="left")
        for c in ("#", "mutant", "source", "bounds", "invariant broken", "found", "depth",
                  "states", "seconds"):
            t.add_column(c)
        for r in rows:
            t.add_row(str(r["catalogue"] or ""), r["mutant"], r["source"], r["bounds"],
                      r["invariant"],
                      "yes" if r["found"] else "[red]NO[/red]", str(r["depth"] or "-"),
                      f"{r['states']:,}", f"{r['seconds']:.2f}")
        out.print(t)
        for g in gaps:
            out.print(f"#{g['catalogue']} not expressible: {g['not_expressible']}")
    if not all(r["found"] for r in rows):
        raise typer.Exit(1)


def register_mutation(app: typer.Typer) -> None:
    @app.command("mutation-test")
    def mutation_test(
        policy: str = typer.Option("upstream-6.14", "--policy", "-p"),
        bounds: str = typer.Option("standard", help="Named bounds: " + ", ".join(CK.BOUNDS)),
        jobs: int = typer.Option(0, help="Worker processes (0: all cores)."),
        max_states: int = typer.Option(4_000_000, help="Per-mutant state limit."),
        kinds: str = typer.Option("drop,swap,flag", help="Mutant kinds to run."),
        only: str = typer.Option("", help="Comma list of mutant ids or id prefixes "
                                 "(drop:host:sme_load) to run instead of all."),
        output: Path | None = typer.Option(None, "-o", "--output", help="Write JSON here."),
        json_out: bool = typer.Option(False, "--json"),
        engine: str = typer.Option("auto", help="Checker engine: auto, native or python."),
    ) -> None:
        """Generate faulty variants of a policy (dropped statements, swapped steps,
        flipped host flags) and report how many the checker kills at the bounds."""
        import os

        from kvmctx import api
        from kvmctx.engines import mutation as MT

        try:
            api.resolve_policy(policy)
        except api.UsageError as e:
            fail(str(e))
        if bounds not in CK.BOUNDS:
            fail(f"unknown bounds {bounds!r}; valid: {', '.join(CK.BOUNDS)}")
        if engine not in EN.ENGINES:
            fail(f"--engine {engine!r}; valid: {', '.join(EN.ENGINES)}")
        want = {k.strip() for k in kinds.split(",") if k.strip()}
        if not want or not want <= {"drop", "swap", "flag"}:
            fail(f"--kinds must be a comma list of drop, swap, flag; got {kinds!r}")
        prefixes = tuple(p.strip() for p in only.split(",") if p.strip())
        if prefixes:
            known = [s.id for s in MT.generate(policy)]
            for p in prefixes:
                if not any(i.startswith(p) for i in known):
                    fail(f"--only {p!r} names no mutant of {policy}; ids look like "
                         f"{known[0]} (see a --json report)")
        if output is not None and output.exists():
            fail(f"{output} exists; not overwriting it")
        n = jobs or os.cpu_count() or 1

        def prog(done: int, total: int, r: MT.MutantResult) -> None:
            err.print(f"[{done}/{total}] {r.spec.id}: {r.verdict}"
                      + (f" ({r.invariant}, depth {r.depth})" if r.verdict == "killed" else "")
                      + f" {r.seconds:.0f}s", markup=False)

        rep = MT.mutation_test(policy, bounds, jobs=n, max_states=max_states,
                               only=lambda s: s.kind in want and (
                                   not prefixes or s.id.startswith(prefixes)),
                               explanations=MT.EXPLANATIONS.get(policy), progress=prog,
                               engine=engine)
        data = rep.as_json()
        if output is not None:
            import json

            try:
                output.write_text(json.dumps(data, indent=2) + "\n")
            except OSError as e:
                fail(f"cannot write {output}: {e.strerror or e}")
        if json_out:
            print_json(data)
            return
        c = rep.counts()
        out.print(f"{policy} at {bounds}: {len(rep.results)} mutants; killed {c['killed']}, "
                  f"crashed {c['crashed']}, survived {c['survived']}, unreached "
                  f"{c['unreached']}; kill rate {rep.kill_rate():.1%} ({rep.seconds:.0f} s)")
        for r in rep.results:
            if r.verdict == "survived":
                out.print(f"  survived {r.spec.id} in {r.spec.function}: {r.spec.text}"
                          + (f" -- killed at {'; '.join(r.killed_at)}" if r.killed_at else "")
                          + (f" -- {r.explanation}" if r.explanation else ""), markup=False)
