"""Mutation testing of the checker's verdict on a policy.

Is "upstream-6.14 is safe at --bounds standard" a strong statement, or would
the checker also call a broken design safe? Mutants answer it. Each one is
the policy with one deliberate fault, generated automatically:

* ``drop``: one statement of a policy hook or of the host machinery it runs
  on (kvmctx.model.host) replaced by ``pass``: a state save, a flag set or
  clear, a trap enable, a binding. Statements that only count (``m.ctr``)
  are not mutated: they price, they do not decide. Nor are checks (an
  ``m.violate`` or a call to a function that only checks, like a WARN_ON or
  a trapped SME access): dropping one weakens the specification, not the
  design, and can only hide violations.
* ``swap``: two adjacent steps of one hook (vcpu_load, entry, hyp exit...)
  in the other order.
* ``flag``: one host-era flag of the policy's HostConfig flipped (the
  upstream fixes the seeds and catalogue cite, undone one at a time).

A statement the unmutated policy never executes (under the bounds, a short
run at each of the feature bounds in ``ALSO_BOUNDS``, or a simulation of every
feature) cannot change any verdict; it is listed as ``unreached`` rather than
run. Every other mutant is checked in its own
process (the host module is patched there) and is ``killed`` (a violation,
with its invariant and depth), ``crashed`` (the model raised: also a kill,
the fault broke an assertion), or ``survived``. Each survivor needs an
explanation: an equivalent mutant, or a hole in the invariants or the
event vocabulary.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import multiprocessing as mp
import sys
import time
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

# Why a surviving mutant is harmless (or which hole it shows), by policy and id;
# filled in after investigating each survivor of `kvmctx mutation-test`.
_EQ = "equivalent: "
_GAP = "bounds gap (no named bounds has the configuration): "
EXPLANATIONS: dict[str, dict[str, tuple[str, str]]] = {"upstream-6.14": {
    # From `kvmctx mutation-test --bounds standard --max-states 1500000` (2026-12-03,
    # after issue 15): survivors killed at no other named bounds. Keys name the
    # function and the dropped statement's place in it (1 = its first droppable one);
    # each value is (the mutant's statement or flag text, why it survives).
    "drop:upstream_6_14:load_fp_owner_free:1": (
        's[m.pf["fp_owner"][k]] = FP_STATE_FREE',
        _EQ + "fp_owner = FREE at vcpu_load; the flush sets TIF_FOREIGN_FPSTATE, so ctxflush "
        "sets FREE before the first entry anyway"),
    "drop:upstream_6_14:activate_traps:2": (
        's[m.zen[k]] = 0  # CPACR_EL1 (CPTR_EL2 under VHE) is shared with host EL0',
        _EQ + "EL0 ZEN trapped at entry; deactivate_traps traps it again at exit with nothing "
        "in between that reads it"),
    "drop:upstream_6_14:deactivate_traps:1": (
        's[m.zen[k]] = 0',
        _EQ + "the twin of drop:upstream_6_14:activate_traps:2 (trapped at entry already)"),
    "drop:host:fpsimd_flush_cpu_state:2": (
        's[m.to_save[k]] = TO_SAVE_CURRENT',
        _EQ + "to_save of an empty binding is dead (every bind writes it)"),
    "drop:host:fpsimd_flush_cpu_state:3": (
        's[m.bound_vl[k]] = 1',
        _EQ + "bound_vl of an empty binding is dead (every bind writes it)"),
    "drop:host:load_state:5": (
        's[m.hi[k]] = ZERO',
        _EQ + "after an FPSIMD load TIF_SVE is clear and EL0 SVE traps; do_sve_acc zeroes the "
        "upper bits before any SVE read"),
    "drop:host:fpsimd_thread_switch:6": (
        's[m.hi[k]] = ZERO',
        _EQ + "kernel-mode NEON reads only V0-V31"),
    "drop:host:fpsimd_thread_switch:8": (
        's[m.foreign[nxt]] = 1',
        _EQ + "a task inside kernel-mode NEON still has the flag that kernel_neon_begin set "
        "(Linux does not set it here either)"),
    "drop:host:fpsimd_save_kernel_state:2": (
        's[m.bound[k]] = kc',
        _EQ + "binding the saved kernel-mode NEON state only feeds the lazy-load check, and "
        "v6.14 flushes (empties the binding) before that check (01098d893fa8); nothing "
        "else reads the binding while the next task's TIF_FOREIGN_FPSTATE is set"),
    "drop:host:fpsimd_save_kernel_state:3": (
        's[m.to_save[k]] = TO_SAVE_FPSIMD',
        _EQ + "as drop:host:fpsimd_save_kernel_state:2 (to_save of the kernel-state binding: no"
        " save reads it, the next task's TIF_FOREIGN_FPSTATE is set)"),
    "drop:host:fpsimd_save_kernel_state:4": (
        's[m.bound_vl[k]] = 1',
        _EQ + "as drop:host:fpsimd_save_kernel_state:3 (its VL)"),
    "drop:host:fpsimd_save_kernel_state:5": (
        's[m.fcpu[kc]] = k',
        _EQ + "kernel_fpsimd_cpu is read only by the lazy-load check, which v6.14's flush-first"
        " order never reaches (as drop:host:fpsimd_save_kernel_state:2)"),
    "drop:host:kernel_neon_begin:5": (
        's[m.foreign[cur]] = 1',
        _EQ + "fpsimd_flush_cpu_state already sets current's flag (v4.18 on)"),
    "drop:host:kernel_neon_end:2": (
        's[m.hi[k]] = ZERO',
        _EQ + "kernel-mode NEON reads only V0-V31, and the task reloads its user state "
        "(TIF_FOREIGN_FPSTATE is set) before EL0 can read the upper bits (reached at "
        "kneon-nested, a softirq inside task-context NEON)"),
    "drop:host:sme_smstop:6": (
        's[m.za[k]] = ZERO',
        _EQ + "ZA is inaccessible while PSTATE.ZA is off"),
    "drop:host:sme_load:6": (
        's[m.za[k]] = ZERO',
        _EQ + "as drop:host:sme_smstop:6"),
    "drop:host:syscall_enter:3": (
        's[m.hi[k]] = ZERO',
        _EQ + "leaving streaming mode at syscall entry: with TIF_SVE the sve_flush_live below "
        "zeroes the upper bits anyway, without it EL0 cannot read them and do_sve_acc "
        "zeroes them (sme-sve reaches it)"),
    "drop:host:syscall_enter:12": (
        's[m.hi[k]] = ZERO  # sve_flush_live(): the state is live at entry',
        _EQ + "sve_flush_live at syscall entry: the ABI allows keeping or zeroing the upper "
        "bits, the ghost permits both"),
    "drop:host:syscall_enter:13": (
        's[m.to_save[k]] = TO_SAVE_FPSIMD',
        _EQ + "to_save = FPSIMD at syscall entry only lets a save skip the upper bits, which "
        "sve_flush_live just zeroed: dropping it saves more, never less"),
    "drop:host:syscall_enter:14": (
        's[m.insys[t]] = 1',
        _EQ + "in_syscall is not read by v6.14's save rule once 398edaa12f9c records the "
        "discard in to_save"),
    "drop:host:syscall_exit:1": (
        's[m.insys[t]] = 0',
        _EQ + "as drop:host:syscall_enter:14"),
    "swap:vcpu_load:0": (
        'fpsimd_save_and_flush_cpu_state() <-> fp_owner = FP_STATE_FREE',
        _EQ + "nothing in the softirq gap between the two reads fp_owner"),
    "swap:hyp_exit:0": (
        "ZCR back to the vCPU's max VL <-> host CPTR/CPACR restored (EL0 SVE trapped)",
        _EQ + "both steps run in hyp with IRQs masked"),
    "flag:kernel_neon_preemptible": (
        'kernel_neon_preemptible=False',
        _EQ + "non-preemptible kernel-mode NEON (before v6.8) is a correct older host, not a "
        "bug"),
    "flag:kernel_neon_sets_foreign": (
        'kernel_neon_sets_foreign=False',
        _EQ + "the twin of drop:host:kernel_neon_begin:5"),
    "flag:bind_sets_state_cpu": (
        'bind_sets_state_cpu=True',
        _EQ + "v6.14 never reads fpsimd_cpu of a vCPU state"),
    "flag:kernel_state_lazy": (
        'kernel_state_lazy=False',
        _EQ + "without the lazy load v6.14 reloads the kernel state every time, which its "
        "flush-first order does anyway"),
    "flag:kernel_switch_flushes": (
        'kernel_switch_flushes=False',
        _EQ + "in v6.14's order the flush before the load does it; the pre-fix kernel (no flush"
        " at all) is the mutant kernel-switch-no-flush, found at kneon-nested"),
    "drop:host:do_sve_acc:4": (
        's[m.hi[k]] = ZERO',
        _EQ + "a live task without TIF_SVE has zero upper bits already (FPSIMD loads and writes"
        " zero them)"),
    "drop:host:do_sve_acc:8": (
        's[m.fp_type[t]] = FP_STATE_SVE',
        _EQ + "for correctness, not for cost: left FPSIMD, the reload clears TIF_SVE and loads"
        " V0-V31 with zero upper bits, the values the converted SVE image holds; the task's"
        " next SVE instruction traps once more (a cost the simulator prices)"),
    "drop:host:sme_load:2": (
        's[m.fpmr[k]] = ZERO                   # the SM change zeroes FPMR',
        _EQ + "in v6.14's order task_fpsimd_load() writes FPMR from the saved image right after"
        " SVCR (e5fa85fce08b), over the zero; the zero is what breaks the older order, the"
        " flag fpmr_after_svcr, killed at host-fpmr"),
    "drop:host:do_sve_acc:11": (
        's[m.permit[t]] = 0',
        _EQ + "ghost: the discard permission is moot with zero upper bits"),
    "drop:host:do_sme_acc:6": (
        's[m.mem_za[t]] = ZERO',
        _EQ + "the zeroed image is dead: with TIF_SME clear no ZA state of the task is live or "
        "bound, PSTATE.ZA is 0 at the trap and SMSTART ZA zeroes ZA in the registers; the"
        " image is read again only after a save or a regset write replaces it (the mutant"
        " zt-write-keeps-tif-sme-clear is the opposite fault: a zeroing that wipes a "
        "debugger's ZT0)"),
    "flag:put_syncs_smen": (
        'put_syncs_smen=False',
        _EQ + "v6.14's vcpu_put writes no SMEN at all (407a99c4654e removed the write the ISB "
        "followed); the mutant smen-put-no-isb puts the v6.2 put step back with the flag "
        "off, found at kvm-sme-isb"),
    "flag:clone_flushes_task": (
        'clone_flushes_task=False',
        _EQ + "since e0cb0f26594c arch_dup_task_struct() saves and flushes the parent first, so"
        " the child inherits 'no CPU' without copy_thread()'s own flush (071b6d4a5d34); "
        "the mutant clone-dead-binding undoes both, found at host-fork-reuse"),
}}

# Smaller bounds with features the main bounds leave out, tried on survivors.
ALSO_BOUNDS = ("kvm-vmm-sve", "kvm-sve-nvhe", "sysregs", "kvm-sme", "host-sme-kneon",
               "host-pm", "host-hotplug", "host-exec", "host-signals", "sme-migration",
               "sve-migration", "kneon-nested", "sve-two-vls", "sme-sve", "host-syscall-stop",
               "host-sig", "kvm-sme-isb", "kvm-sme-isb-softirq", "host-ptrace-sme", "host-vl",
               "host-vl-sme", "host-fork", "host-fork-reuse", "host-churn", "host-sig-sve",
               "host-fork-sme", "host-vl-ssve", "kvm-reset", "kvm-reset-fpmr", "host-fpmr",
               "host-ptrace-sve")

HOOKS = ("vcpu_load", "ctxflush", "guest_entry", "hyp_exit", "ctxsync", "vcpu_put")
HOST_MODULE = "kvmctx.model.host"


@dataclass(frozen=True)
class MutantSpec:
    id: str
    kind: str            # drop, swap, flag
    module: str          # where the fault is
    function: str
    line: int
    text: str            # the statement dropped / the swap / the flag


@dataclass
class MutantResult:
    spec: MutantSpec
    verdict: str                   # killed, crashed, survived, unreached
    invariant: str = ""
    depth: int = 0
    states: int = 0
    seconds: float = 0.0
    complete: bool = True
    message: str = ""
    explanation: str = ""
    killed_at: list[str] = field(default_factory=list)   # other bounds that kill it

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(d.pop("spec"))
        return d


# ------------------------------------------------------------ generation


def _counting_only(stmt: ast.stmt) -> bool:
    """``m.ctr[...] += n`` and friends: pricing, not behaviour."""
    targets: list[ast.expr] = []
    if isinstance(stmt, ast.AugAssign):
        targets = [stmt.target]
    elif isinstance(stmt, ast.Assign):
        targets = list(stmt.targets)
    for tg in targets:
        if isinstance(tg, ast.Subscript) and (
                (isinstance(tg.value, ast.Attribute) and tg.value.attr == "ctr")
                or (isinstance(tg.value, ast.Name) and tg.value.id == "ctr")):  # ctr = m.ctr
            return True
    return False


def _state_change(st: ast.stmt) -> bool:
    """A call (a save, a load, a flush...) or a write into the state or the model
    (``s[...] = ...``, ``m.x = ...``); local variables are not faults to inject."""
    if isinstance(st, ast.Expr):
        return isinstance(st.value, ast.Call)
    if isinstance(st, (ast.Assign, ast.AugAssign)):
        targets = st.targets if isinstance(st, ast.Assign) else [st.target]
        return all(isinstance(tg, (ast.Subscript, ast.Attribute)) for tg in targets)
    return False


def _called(st: ast.stmt) -> str:
    """The name a call statement calls (``f(...)`` or ``m.f(...)``), else ''."""
    if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call):
        fn = st.value.func
        if isinstance(fn, ast.Name):
            return fn.id
        if isinstance(fn, ast.Attribute):
            return fn.attr
    return ""


def _check_functions(modnames: list[str]) -> frozenset[str]:
    """Functions of these modules and of the model's feature modules that only
    check: their statements are ``m.violate`` calls, calls to other such
    functions, and local bookkeeping, with no write to the state or the model."""
    import pkgutil

    feat = importlib.import_module("kvmctx.model.feat")
    modnames = [*modnames, *(f"{feat.__name__}.{m.name}"
                             for m in pkgutil.iter_modules(feat.__path__))]
    fns: dict[str, ast.FunctionDef] = {}
    for modname in modnames:
        for node in ast.parse(inspect.getsource(importlib.import_module(modname))).body:
            if isinstance(node, ast.FunctionDef):
                fns.setdefault(node.name, node)
    checks = {"violate"}
    grew = True
    while grew:
        grew = False
        for name, fn in fns.items():
            if name in checks:
                continue
            calls = [c for c in map(_called, _all_statements(fn)) if c]
            writes = any(_state_change(st) and not _called(st) for st in _all_statements(fn))
            if calls and not writes and all(c in checks for c in calls):
                checks.add(name)
                grew = True
    return frozenset(checks)


def _all_statements(fn: ast.FunctionDef) -> Iterator[ast.stmt]:
    """Every statement of the function, in nested blocks too (``body`` and ``orelse``)."""
    for node in ast.walk(fn):
        for fld in ("body", "orelse"):
            body = getattr(node, fld, None)
            if isinstance(body, list):
                yield from (st for st in body if isinstance(st, ast.stmt))


def _droppable(fn: ast.FunctionDef, checks: frozenset[str] = frozenset()
               ) -> Iterator[ast.stmt]:
    # (A docstring is an expression statement but not a call: _state_change skips it.)
    for st in _all_statements(fn):
        if _state_change(st) and not _counting_only(st) and _called(st) not in checks:
            yield st


def _functions(modname: str, names: set[str] | None) -> list[tuple[ast.FunctionDef, str]]:
    mod = importlib.import_module(modname)
    src = inspect.getsource(mod)
    tree = ast.parse(src)
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and (names is None or node.name in names):
            out.append((node, src))
    return out


def policy_functions(policy: Any) -> set[str]:
    names = set()
    for hook in HOOKS:
        for st in getattr(policy, hook) or ():
            names.add(st.fn.__name__)
    if policy.hyp_fp_trap is not None:
        names.add(policy.hyp_fp_trap.__name__)
    return names


def generate(policy_name: str = "upstream-6.14") -> list[MutantSpec]:
    from kvmctx import policies as P

    pol = P.get(policy_name)
    polmod = sys.modules[pol.vcpu_load[0].fn.__module__].__name__ if pol.vcpu_load else ""
    specs: list[MutantSpec] = []
    checks = _check_functions([m for m in (polmod, HOST_MODULE) if m])
    for modname, names in ((polmod, policy_functions(pol)), (HOST_MODULE, None)):
        if not modname:
            continue
        for fn, src in _functions(modname, names):
            lines = src.splitlines()
            # Ids name the function and the statement's place in it (source order), so
            # an edit elsewhere in the module does not move them under an explanation.
            for i, st in enumerate(sorted(_droppable(fn, checks), key=lambda x: x.lineno), 1):
                text = lines[st.lineno - 1].strip()
                specs.append(MutantSpec(f"drop:{modname.rsplit('.', 1)[-1]}:{fn.name}:{i}",
                                        "drop", modname, fn.name, st.lineno, text))
    for hook in HOOKS:
        steps = getattr(pol, hook) or ()
        for i in range(len(steps) - 1):
            specs.append(MutantSpec(f"swap:{hook}:{i}", "swap", polmod, hook, i,
                                    f"{steps[i].name} <-> {steps[i + 1].name}"))
    for f in dataclasses.fields(pol.host):
        val = getattr(pol.host, f.name)
        if isinstance(val, bool):
            specs.append(MutantSpec(f"flag:{f.name}", "flag", HOST_MODULE, "HostConfig", 0,
                                    f"{f.name}={not val}"))
    return specs


# ------------------------------------------------------------ coverage


def executed_lines(policy_name: str, bounds_name: str, max_states: int = 60_000,
                   sim_events: int = 30_000, engine: str = "auto",
                   also: tuple[str, ...] = ALSO_BOUNDS) -> set[tuple[str, int]]:
    """(file, line) executed by the unmutated policy: a bounded checker run at
    the bounds and at each of ``also`` (a statement only a feature reaches is
    run and then tried at the feature bounds, not written off as unreached),
    plus a simulation with every feature the policy supports."""
    from kvmctx import api
    from kvmctx.engines import checker as CK
    from kvmctx.engines import engine as EN
    from kvmctx.model.machine import Model

    pol = api.resolve_policy(policy_name)
    hits: set[tuple[str, int]] = set()
    files = {inspect.getsourcefile(importlib.import_module(HOST_MODULE)),
             inspect.getsourcefile(sys.modules[pol.vcpu_load[0].fn.__module__])}

    def tracer(frame: types.FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename in files:
            def local(fr: types.FrameType, ev: str, a: Any) -> Any:
                if ev == "line":
                    hits.add((fr.f_code.co_filename, fr.f_lineno))
                return local
            return local
        return None

    sys.settrace(tracer)
    try:
        # Every distinct path of every step runs in Python once on either engine (the
        # native one learns from them), so both reach the same lines.
        for name in (bounds_name, *(o for o in also if o != bounds_name and o in CK.BOUNDS)):
            b = CK.adapt_bounds(CK.BOUNDS[name], pol.supports)[0]
            EN.check(Model(b.config(), pol), b, max_states=max_states, engine=engine)
        for sc in ("default", "kvm-stress", "hpc-sve", "crypto-host", "fp-stress", "sme-host"):
            api.run(pol, sc, seed=3, events=sim_events // 4)
    finally:
        sys.settrace(None)
    return hits


# ------------------------------------------------------------ building


def _mutated_namespace(modname: str, lineno: int) -> dict[str, Any]:
    mod = importlib.import_module(modname)
    src = inspect.getsource(mod)
    tree = ast.parse(src)

    class Drop(ast.NodeTransformer):
        def generic_visit(self, node: ast.AST) -> ast.AST:
            super().generic_visit(node)
            for fld in ("body", "orelse"):
                body = getattr(node, fld, None)
                if isinstance(body, list):
                    for i, st in enumerate(body):
                        if isinstance(st, ast.stmt) and st.lineno == lineno \
                                and not isinstance(st, (ast.FunctionDef, ast.If)):
                            body[i] = ast.copy_location(ast.Pass(), st)
            return node

    tree = ast.fix_missing_locations(Drop().visit(tree))
    # A real module object in sys.modules: dataclasses look their module up there.
    name = modname + "__mutant"
    module = types.ModuleType(name)
    module.__file__ = mod.__file__
    sys.modules[name] = module
    exec(compile(tree, mod.__file__ or modname, "exec"), module.__dict__)  # noqa: S102
    return module.__dict__


def build(spec: MutantSpec, policy_name: str) -> Any:
    """The mutated Policy; for host mutants, patches kvmctx.model.host in this
    process (run it in a process of its own)."""
    from kvmctx import policies as P

    pol = P.get(policy_name)
    name = f"{policy_name}~{spec.id}"
    if spec.kind == "flag":
        f, _, val = spec.text.partition("=")
        return dataclasses.replace(pol, name=name, host=pol.host.but(**{f: val == "True"}))
    if spec.kind == "swap":
        steps = list(getattr(pol, spec.function))
        i = spec.line
        steps[i], steps[i + 1] = steps[i + 1], steps[i]
        return dataclasses.replace(pol, name=name, **{spec.function: tuple(steps)})
    ns = _mutated_namespace(spec.module, spec.line)
    if spec.module == HOST_MODULE:
        host = importlib.import_module(HOST_MODULE)
        setattr(host, spec.function, ns[spec.function])
        return dataclasses.replace(pol, name=name)
    mutated = ns["POLICY"]
    return dataclasses.replace(mutated, name=name)


def run_one(args: tuple[MutantSpec, str, str, int, str]) -> MutantResult:
    spec, policy_name, bounds_name, max_states, engine = args
    from kvmctx.engines import checker as CK
    from kvmctx.engines import engine as EN
    from kvmctx.model.machine import Model

    t0 = time.perf_counter()
    try:
        pol = build(spec, policy_name)
        b = CK.adapt_bounds(CK.BOUNDS[bounds_name], pol.supports)[0]
        res = EN.check(Model(b.config(), pol), b, max_states=max_states, engine=engine)
    except Exception as e:  # the fault broke the model: an assertion, a bad index...
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return MutantResult(spec, "crashed", message=f"{type(e).__name__}: {e} "
                            f"({tb.filename.rsplit('/', 1)[-1]}:{tb.lineno})",
                            seconds=time.perf_counter() - t0)
    if res.violation is not None:
        return MutantResult(spec, "killed", res.violation["invariant"], res.depth, res.states,
                            res.seconds, True, res.violation["message"])
    out = MutantResult(spec, "survived", "", res.depth, res.states, res.seconds,
                       res.complete, res.stop_reason)
    # Which other named bounds (if any) kill it: a survivor killed elsewhere shows
    # a feature the main bounds leave out, not a hole in the invariants.
    for other in ALSO_BOUNDS:
        if other == bounds_name or other not in CK.BOUNDS:
            continue
        try:
            ob = CK.adapt_bounds(CK.BOUNDS[other], pol.supports)[0]
            r2 = EN.check(Model(ob.config(), pol), ob, max_states=max_states, engine=engine)
        except Exception as e:  # noqa: BLE001 - reported, not fatal
            out.killed_at.append(f"{other}: crashed ({type(e).__name__})")
            continue
        if r2.violation is not None:
            out.killed_at.append(f"{other}: {r2.violation['invariant']} at depth {r2.depth}")
    return out


@dataclass
class MutationReport:
    policy: str
    bounds: str
    results: list[MutantResult] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out = {"killed": 0, "crashed": 0, "survived": 0, "unreached": 0}
        for r in self.results:
            out[r.verdict] += 1
        return out

    def kill_rate(self) -> float:
        c = self.counts()
        run = c["killed"] + c["crashed"] + c["survived"]
        return (c["killed"] + c["crashed"]) / run if run else 0.0

    def as_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "bounds": self.bounds, "counts": self.counts(),
                "kill_rate": round(self.kill_rate(), 4), "seconds": round(self.seconds, 1),
                "mutants": [r.as_dict() for r in self.results]}


def attach_explanations(report: MutationReport,
                        explanations: dict[str, tuple[str, str]]) -> None:
    """Give each survivor its explanation. An edit inside a function shifts the ids
    after it, so an explanation is used only for the statement it was written for."""
    for r in report.results:
        if r.spec.id in explanations and r.verdict == "survived":
            text, why = explanations[r.spec.id]
            r.explanation = why if text == r.spec.text else (
                f"stale explanation, written for {text!r}: {why}")


def mutation_test(policy_name: str = "upstream-6.14", bounds_name: str = "standard",
                  jobs: int = 1, max_states: int = 4_000_000,
                  only: Callable[[MutantSpec], bool] | None = None,
                  explanations: dict[str, tuple[str, str]] | None = None,
                  progress: Callable[[int, int, MutantResult], None] | None = None,
                  engine: str = "auto") -> MutationReport:
    from kvmctx.catalogue import mutants as MU

    MU.names()  # registers the host-* bounds that ALSO_BOUNDS names
    t0 = time.perf_counter()
    specs = [s for s in generate(policy_name) if only is None or only(s)]
    hits = executed_lines(policy_name, bounds_name, engine=engine) if any(
        s.kind == "drop" for s in specs) else set()
    files: dict[str, str] = {}
    report = MutationReport(policy_name, bounds_name)
    todo: list[MutantSpec] = []
    for s in specs:
        if s.kind == "drop":
            fname = files.setdefault(s.module, inspect.getsourcefile(
                importlib.import_module(s.module)) or "")
            if (fname, s.line) not in hits:
                report.results.append(MutantResult(
                    s, "unreached", message="never executed by the unmutated policy under "
                    "these bounds, the feature bounds or the feature simulation"))
                continue
        todo.append(s)
    args = [(s, policy_name, bounds_name, max_states, engine) for s in todo]
    done = 0
    ctx = mp.get_context("fork")
    with ctx.Pool(max(1, jobs), maxtasksperchild=1) as pool:
        for r in pool.imap_unordered(run_one, args):
            done += 1
            report.results.append(r)
            if progress is not None:
                progress(done, len(args), r)
    order = {s.id: i for i, s in enumerate(specs)}
    report.results.sort(key=lambda r: order[r.spec.id])
    if explanations:
        attach_explanations(report, explanations)
    report.seconds = time.perf_counter() - t0
    return report
