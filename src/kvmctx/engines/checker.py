"""The exhaustive checker: breadth-first over every interleaving within bounds.

Spec apart from bounds: the *spec* is the model (``Model.enabled`` +
``Model.apply`` + the invariants), the *bounds* are a ``ModelConfig`` (how
many CPUs, tasks, vCPUs, which features) plus an optional depth and state
budget. Breadth-first order makes the first violation found a shortest one.

States are stored canonical (``kvmctx.engines.canon``) and packed into
``bytes`` (every canonical field fits in a byte after offsetting), with a
parent index per state, so memory per state is a few hundred bytes.
"""

from __future__ import annotations

import os
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from kvmctx.engines.canon import Canon
from kvmctx.model.config import FEATURES, SYSREG_MODES, ModelConfig, TaskSpec, VcpuSpec
from kvmctx.model.machine import KNEON, MIGRATE, SCHED, SIRQ, Model

# ----------------------------------------------------------------- bounds


@dataclass(frozen=True)
class Bounds:
    """A named configuration to explore."""

    name: str
    cpus: int = 2
    fpsimd_tasks: int = 1
    sve_tasks: int = 1
    kneon_tasks: int = 0
    sme_tasks: int = 0             # tasks using SME streaming mode and ZA (SVL 256)
    vcpus: int = 1
    vcpu_sve: bool = False
    vmm_sve: bool = False          # the VMM threads use SVE at EL0 too
    sve_vls: tuple[int, ...] = ()  # VLs of the SVE tasks in order (default: 256 each)
    sme_sve: bool = False          # the SME tasks also use non-streaming SVE (VL512)
    features: frozenset[str] = frozenset()
    depth: int | None = None
    # How many times each class of event may happen along one run (CHESS-style
    # preemption bounding): "switch" (a running thread switched out), "softirq",
    # "migration", "kneon", ... Classes not listed are unbounded.
    budgets: tuple[tuple[str, int], ...] = ()
    vhe: bool = True
    sysregs: str = "eager"
    description: str = ""

    def config(self) -> ModelConfig:
        tasks: list[TaskSpec] = []
        for i in range(self.fpsimd_tasks):
            tasks.append(TaskSpec(f"T{len(tasks) + 1}", cpu=i % self.cpus,
                                  kneon=i < self.kneon_tasks))
        for i in range(self.sve_tasks):
            vl = self.sve_vls[i] if i < len(self.sve_vls) else 256
            tasks.append(TaskSpec(f"S{i + 1}", sve=True, vl=vl, cpu=(i + 1) % self.cpus))
        for i in range(self.sme_tasks):
            tasks.append(TaskSpec(f"Z{i + 1}", sme=True, svl=256, cpu=i % self.cpus,
                                  sve=self.sme_sve, vl=512 if self.sme_sve else 128))
        for v in range(self.vcpus):
            tasks.append(TaskSpec(f"VMM{v}", vcpu=v, cpu=v % self.cpus, sve=self.vmm_sve,
                                  vl=256 if self.vmm_sve else 128))
        vs = tuple(VcpuSpec(f"vcpu{v}", sve=self.vcpu_sve, vl=256 if self.vcpu_sve else 128)
                   for v in range(self.vcpus))
        return ModelConfig(cpus=self.cpus, tasks=tuple(tasks), vcpus=vs,
                           features=frozenset(self.features), vhe=self.vhe,
                           sysregs=self.sysregs)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cpus": self.cpus, "fpsimd_tasks": self.fpsimd_tasks,
                "sve_tasks": self.sve_tasks, "kneon_tasks": self.kneon_tasks,
                "sme_tasks": self.sme_tasks,
                "vcpus": self.vcpus, "vcpu_sve": self.vcpu_sve, "vmm_sve": self.vmm_sve,
                "sve_vls": list(self.sve_vls), "sme_sve": self.sme_sve,
                "features": sorted(self.features), "depth": self.depth,
                "budgets": dict(self.budgets), "vhe": self.vhe, "sysregs": self.sysregs}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Bounds:
        """Bounds from a counterexample file. Every field is checked against the
        ranges ``kvmctx check`` accepts (the file may be edited by hand): a bad
        one is a ValueError naming ``bounds.<field>`` and what is valid."""
        if not isinstance(d, dict):
            raise ValueError("bounds must be an object")
        unknown = sorted(k for k in d if k not in _FILE_KEYS)
        if unknown:
            raise ValueError(f"bounds: unknown field {_short(unknown[0])}; valid: "
                             f"{', '.join(_FILE_KEYS)}")
        kw: dict[str, Any] = {}
        for key, (lo, hi) in SIZE_RANGES.items():
            if key not in d:
                if key in _REQUIRED:
                    raise ValueError(f"bounds.{key} is missing (an integer in {lo}..{hi})")
                continue
            v = d[key]
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ValueError(f"bounds.{key} = {_short(v)} is not an integer in {lo}..{hi}")
            kw[key] = v
        name = d.get("name", "custom")
        if not isinstance(name, str) or not 0 < len(name) <= 100 or not name.isprintable():
            raise ValueError(f"bounds.name = {_short(name)} is not a name (a string of "
                             "1..100 characters)")
        for key in ("vcpu_sve", "vmm_sve", "sme_sve", "vhe"):
            if key in d:
                if not isinstance(d[key], bool):
                    raise ValueError(f"bounds.{key} = {_short(d[key])} is not true or false")
                kw[key] = d[key]
        vls = d.get("sve_vls", [])
        if not isinstance(vls, list) or len(vls) > TASKS_MAX or not all(
                isinstance(v, int) and not isinstance(v, bool) and v in SVE_VLS for v in vls):
            raise ValueError(f"bounds.sve_vls = {_short(vls)} is not a list of at most "
                             f"{TASKS_MAX} vector lengths in {', '.join(map(str, SVE_VLS))}")
        if vls:
            kw["sve_vls"] = tuple(vls)
        feats = d.get("features", [])
        if not isinstance(feats, list) or not all(isinstance(f, str) for f in feats):
            raise ValueError(f"bounds.features = {_short(feats)} is not a list of feature "
                             f"names; valid: {', '.join(FEATURES)}")
        bad = [f for f in feats if f not in FEATURES]
        if bad:
            raise ValueError(f"bounds.features: unknown feature {_short(bad[0])}; valid: "
                             f"{', '.join(FEATURES)}")
        depth = d.get("depth")
        if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool)
                                  or not 1 <= depth <= DEPTH_MAX):
            raise ValueError(f"bounds.depth = {_short(depth)} is not null or an integer in "
                             f"1..{DEPTH_MAX}")
        budgets = d.get("budgets", {})
        if not isinstance(budgets, dict):
            raise ValueError(f"bounds.budgets = {_short(budgets)} is not an object of "
                             f"CLASS: N; classes: {', '.join(BUDGET_CLASSES)}")
        for k, v in budgets.items():
            if k not in BUDGET_CLASSES:
                raise ValueError(f"bounds.budgets: unknown class {_short(k)}; valid: "
                                 f"{', '.join(BUDGET_CLASSES)}")
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= BUDGET_MAX:
                raise ValueError(f"bounds.budgets.{k} = {_short(v)} is not an integer in "
                                 f"0..{BUDGET_MAX}")
        sysregs = d.get("sysregs", "eager")
        if sysregs not in SYSREG_MODES:
            raise ValueError(f"bounds.sysregs = {_short(sysregs)} is not one of "
                             f"{', '.join(SYSREG_MODES)}")
        return Bounds(name=name, features=frozenset(feats), depth=depth,
                      budgets=tuple(sorted(budgets.items())), sysregs=sysregs, **kw)


# What ``kvmctx check`` accepts and a counterexample file may hold (one table for
# both, so a file the checker wrote always replays): sizes, budgets, depth.
# --tasks (FPSIMD plus SVE host tasks) is 0..TASKS_MAX; a file holds up to twice
# that many FPSIMD tasks because adapt_bounds turns the SVE and SME tasks into
# FPSIMD ones for a design without them.
TASKS_MAX = 4
SIZE_RANGES: dict[str, tuple[int, int]] = {
    "cpus": (1, 4), "fpsimd_tasks": (0, 2 * TASKS_MAX), "sve_tasks": (0, TASKS_MAX),
    "kneon_tasks": (0, TASKS_MAX), "sme_tasks": (0, TASKS_MAX), "vcpus": (0, 3)}
BUDGET_MAX = 200     # a budget is stored in a byte of the checker state
DEPTH_MAX = 1_000_000
_REQUIRED = ("cpus", "fpsimd_tasks", "sve_tasks", "vcpus")
_FILE_KEYS = ("name", "cpus", "fpsimd_tasks", "sve_tasks", "kneon_tasks", "sme_tasks", "vcpus",
              "vcpu_sve", "vmm_sve", "sve_vls", "sme_sve", "features", "depth", "budgets",
              "vhe", "sysregs")
SVE_VLS = (128, 256, 512, 1024, 2048)  # the VLs a bounds file may give its SVE tasks


def _short(v: Any) -> str:
    """A value for a one-line message: repr, cut to 40 characters, no newlines."""
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


# Budget classes an action can belong to (see budget_class).
BUDGET_CLASSES = ("switch", "softirq", "migration", "kneon", "signal", "ptrace", "exec",
                  "hotplug", "pm", "guest-vl", "sysreg", "vfp", "vcpu-reset", "one-reg",
                  "vl", "clone", "exit")

STANDARD_FEATURES = frozenset({"sve", "softirq-neon", "preempt", "migration", "exit-user",
                               "signals"})

BOUNDS: dict[str, Bounds] = {
    "kvm-vmm-sve": Bounds(
        "kvm-vmm-sve", cpus=1, fpsimd_tasks=1, sve_tasks=0, vcpus=1, vmm_sve=True,
        features=frozenset({"sve", "softirq-neon", "exit-user", "preempt"}),
        budgets=(("softirq", 2), ("switch", 3)),
        description="1 CPU, 1 FPSIMD task, a VMM thread that uses SVE at EL0 with 1 vCPU, "
                    "softirq kernel-mode NEON"),
    "sysregs": Bounds(
        "sysregs", cpus=1, fpsimd_tasks=1, sve_tasks=0, vcpus=1,
        features=frozenset({"sysregs", "exit-user", "preempt"}),
        budgets=(("switch", 2), ("sysreg", 3)), sysregs="deferred",
        description="1 CPU, 1 task, a VMM with 1 vCPU, deferred EL1/EL0 sysregs (VHE), "
                    "guest sysreg writes, emulated sysreg accesses, host TLS writes"),
    "kvm-sve-nvhe": Bounds(
        "kvm-sve-nvhe", cpus=1, fpsimd_tasks=1, sve_tasks=0, vcpus=1, vcpu_sve=True,
        features=frozenset({"guest-sve", "guest-vl", "softirq-neon", "exit-user"}),
        budgets=(("softirq", 2), ("switch", 2)), vhe=False,
        description="nVHE host, 1 CPU, 1 FPSIMD task, a VMM with 1 SVE vCPU (VL256) that may "
                    "lower its VL, softirq kernel-mode NEON"),
    "kvm-sme": Bounds(
        "kvm-sme", cpus=1, fpsimd_tasks=1, sve_tasks=0, sme_tasks=1, vcpus=1,
        features=frozenset({"sme", "softirq-neon", "exit-user", "preempt"}),
        budgets=(("softirq", 1), ("switch", 3)),
        description="1 CPU, 1 FPSIMD task, 1 task using SME streaming mode and ZA (SVL256), "
                    "a VMM with 1 vCPU, softirq kernel-mode NEON"),
    "small": Bounds(
        "small", cpus=1, fpsimd_tasks=1, sve_tasks=0, vcpus=1,
        features=frozenset({"softirq-neon", "exit-user"}),
        description="1 CPU, 1 FPSIMD task, a VMM with 1 vCPU, softirq kernel-mode NEON"),
    "standard": Bounds(
        "standard", cpus=2, fpsimd_tasks=1, sve_tasks=1, vcpus=1,
        features=STANDARD_FEATURES,
        budgets=(("migration", 1), ("signal", 2), ("softirq", 2), ("switch", 3)),
        description="2 CPUs, 2 host tasks (one FPSIMD, one SVE at VL256), a VMM with 1 vCPU, "
                    "softirq kernel-mode NEON, preemption, migration, signals (delivery and "
                    "sigreturn, FPSIMD frames), exits to the VMM; along any run at most 3 "
                    "switch-outs, 2 softirq NEON uses, 1 migration, 2 signal events (all other "
                    "events unbounded; the other host lifecycle events are in the host-* "
                    "bounds)"),
    # Small bounds that reach what the ones above do not (issue 14): migration twice
    # with SME or SVE tasks, nested kernel-mode NEON, two VLs on one CPU, an SME task
    # that also uses non-streaming SVE.
    "sme-migration": Bounds(
        "sme-migration", cpus=2, fpsimd_tasks=1, sve_tasks=0, sme_tasks=1, vcpus=0,
        features=frozenset({"sme", "preempt", "migration", "trap-window"}),
        budgets=(("migration", 2), ("switch", 3)),
        description="2 CPUs, 1 FPSIMD task, 1 task using SME streaming mode and ZA, no "
                    "vCPU; preemption (also inside the SME access trap), at most 2 "
                    "migrations and 3 switch-outs"),
    "sve-migration": Bounds(
        "sve-migration", cpus=2, fpsimd_tasks=1, sve_tasks=1, vcpus=0,
        features=frozenset({"sve", "preempt", "migration", "trap-window"}),
        budgets=(("migration", 2), ("switch", 3)),
        description="2 CPUs, 1 FPSIMD task, 1 SVE task (VL256), no vCPU; preemption (also "
                    "inside the SVE access trap), at most 2 migrations and 3 switch-outs"),
    "kneon-nested": Bounds(
        "kneon-nested", cpus=1, fpsimd_tasks=2, sve_tasks=0, kneon_tasks=2, vcpus=0,
        features=frozenset({"kernel-neon", "softirq-neon", "preempt"}),
        budgets=(("kneon", 2), ("softirq", 2), ("switch", 3)),
        description="1 CPU, 2 tasks doing kernel-mode NEON in their syscalls (preemptible "
                    "from v6.8), softirq kernel-mode NEON that may nest inside it"),
    "sve-two-vls": Bounds(
        "sve-two-vls", cpus=1, fpsimd_tasks=0, sve_tasks=2, sve_vls=(256, 512), vcpus=0,
        features=frozenset({"sve", "preempt", "softirq-neon"}),
        budgets=(("softirq", 1), ("switch", 3)),
        description="1 CPU, 2 SVE tasks with different VLs (256 and 512), softirq "
                    "kernel-mode NEON"),
    "sme-sve": Bounds(
        "sme-sve", cpus=1, fpsimd_tasks=1, sve_tasks=0, sme_tasks=1, sme_sve=True, vcpus=0,
        features=frozenset({"sme", "sve", "preempt", "trap-window"}),
        budgets=(("switch", 3),),
        description="1 CPU, 1 FPSIMD task, 1 task using SME (SVL256) that also uses "
                    "non-streaming SVE (VL512)"),
}

# Standard with the EL0 SVE/SME access traps as the preemptible paths Linux runs
# (feature trap-window, docs/model.md): 1.5x the states for upstream-6.14, 2x for
# arm64-4.17; kept apart so the standard verdicts stay comparable (docs/checker.md).
BOUNDS["standard-traps"] = Bounds(
    "standard-traps", cpus=2, fpsimd_tasks=1, sve_tasks=1, vcpus=1,
    features=STANDARD_FEATURES | {"trap-window"},
    budgets=BOUNDS["standard"].budgets,
    description="standard, with the EL0 SVE/SME access traps as preemptible kernel paths "
                "(trap entry with IRQs on, the handler under the FP context, after the put, "
                "the return to EL0)")


def register_bounds(b: Bounds) -> Bounds:
    """Add named bounds (feature and mutant modules use it for their own bounds)."""
    if b.name in BOUNDS:
        raise ValueError(f"bounds {b.name} defined twice")
    BOUNDS[b.name] = b
    return b


def adapt_bounds(b: Bounds, supports: frozenset[str]) -> tuple[Bounds, list[str]]:
    """Fit bounds to what a design can express (the same rule as for workloads):
    SVE tasks become FPSIMD tasks where there is no host SVE, SVE vCPUs become
    FPSIMD vCPUs where vCPU SVE did not exist, and other features the design
    cannot express are left out. The notes say what changed."""
    missing = set(b.features) - set(supports)
    if not missing:
        return b, []
    notes = []
    kw: dict[str, Any] = {"features": frozenset(set(b.features) & set(supports))}
    if "sve" in missing and b.sve_tasks:
        kw["fpsimd_tasks"] = b.fpsimd_tasks + b.sve_tasks
        kw["sve_tasks"] = 0
        notes.append(f"no host SVE: the {b.sve_tasks} SVE task(s) run FPSIMD-only")
    if "sve" in missing and b.vmm_sve:
        kw["vmm_sve"] = False
    if "sve" in missing and b.sme_sve:
        kw["sme_sve"] = False
    if "guest-sve" in missing and b.vcpu_sve:
        kw["vcpu_sve"] = False
        notes.append("no vCPU SVE: the vCPU runs FPSIMD-only")
    if "kernel-neon" in missing and b.kneon_tasks:
        kw["kneon_tasks"] = 0
    if "sme" in missing and b.sme_tasks:
        kw["fpsimd_tasks"] = kw.get("fpsimd_tasks", b.fpsimd_tasks) + b.sme_tasks
        kw["sme_tasks"] = 0
        notes.append(f"no SME: the {b.sme_tasks} SME task(s) run FPSIMD-only")
    other = sorted(missing - {"sve", "guest-sve", "sme"})
    if other:
        notes.append(f"left out (the design cannot express them): {', '.join(other)}")
    return Bounds(**{**b.__dict__, **kw}), notes


# ----------------------------------------------------------------- results


@dataclass
class CheckResult:
    policy: str
    mutant: str | None
    bounds: Bounds
    states: int
    transitions: int
    depth: int
    complete: bool
    seconds: float
    violation: dict[str, Any] | None = None
    path: list[tuple[int, int, int]] = field(default_factory=list)
    stop_reason: str = ""
    peak_rss_mb: float = 0.0
    notes: list[str] = field(default_factory=list)
    engine: str = "python"
    # Native engine only: Python runs per unit, tree nodes, store bytes (engine.md).
    engine_stats: dict[str, int] = field(default_factory=dict)

    @property
    def states_per_s(self) -> float:
        return self.states / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "mutant": self.mutant,
            "bounds": self.bounds.name,
            "states": self.states,
            "transitions": self.transitions,
            "depth": self.depth,
            "complete": self.complete,
            "stop_reason": self.stop_reason,
            "seconds": round(self.seconds, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "violation": self.violation,
            "adapted": self.notes,
            "engine": self.engine,
        }


def _rss_mb() -> float:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - non-Linux
        return 0.0


# ----------------------------------------------------------------- checker


def budget_class(m: Model, s: list[int], a: tuple[int, int, int]) -> str | None:
    """Which budget an action spends, if any."""
    kind = a[0]
    if kind == SCHED:
        return "switch" if s[m.cur[a[1]]] else None
    spec = m.ext_actions.get(kind)
    if spec is not None:
        return spec.budget
    return _ACTION_BUDGET.get(kind)


_ACTION_BUDGET = {SIRQ: "softirq", MIGRATE: "migration", KNEON: "kneon"}


class Checker:
    def __init__(self, model: Model, bounds: Bounds, max_states: int | None = None,
                 max_memory_mb: float | None = None, symmetry: bool = True,
                 progress: Any = None, mutant: str | None = None) -> None:
        self.m = model
        self.bounds = bounds
        self.features = frozenset(bounds.features)
        self.max_states = max_states
        if max_memory_mb is None:
            try:
                import psutil

                max_memory_mb = psutil.virtual_memory().available / 2**20 * 0.7
            except Exception:  # pragma: no cover
                max_memory_mb = 8192.0
        self.max_memory_mb = max_memory_mb
        self.canon = Canon(model, symmetry=symmetry)
        self.progress = progress
        self.mutant = mutant
        self.path_message = ""   # the violation's message as the real-label replay words it
        self.budget_names = [name for name, _ in bounds.budgets]
        self.budget_init = bytes(n for _, n in bounds.budgets)
        self.budget_pos = {name: i for i, name in enumerate(self.budget_names)}
        model.check_invariants = True
        model.dedupe_lost = False

    # A checker state is the canonical model bytes followed by the remaining budgets.

    def budget_slots(self) -> dict[int, int]:
        """Action kind -> index of the budget it spends (kinds without one left out);
        a switch spends "switch" only when a running thread is switched out."""
        pos = self.budget_pos
        return {kind: pos[cls] for kind, cls in
                [*_ACTION_BUDGET.items(), *((k, sp.budget) for k, sp in self.m.ext_actions.items())]
                if cls in pos}

    def successors(self, key: bytes) -> list[tuple[tuple[int, int, int], list[int], bytes]]:
        """(action, successor model state, successor budgets) for every enabled action."""
        m = self.m
        n = self.canon.size
        st = list(key[:n])
        budgets = key[n:]
        out = []
        pos = self.budget_pos
        for a in m.enabled(st, self.features):
            bud = budgets
            if pos:
                cls = budget_class(m, st, a)
                if cls is not None and cls in pos:
                    i = pos[cls]
                    if not budgets[i]:
                        continue
                    bb = bytearray(budgets)
                    bb[i] -= 1
                    bud = bytes(bb)
            s = st.copy()
            m.apply(s, a)
            out.append((a, s, bud))
        return out

    # Raw successor bytes -> canonical bytes. The canonical form is a pure function of
    # the raw state, and most transitions reach a raw state met before (over 80% at
    # standard bounds), so this skips most canonicalisations; bounded, cleared when full.
    MEMO_MAX = 1 << 22

    def run(self) -> CheckResult:
        m = self.m
        key_of = self.canon.key
        key_bytes = self.canon.key_bytes
        memo: dict[bytes, bytes] = {}
        memo_get = memo.get
        memo_max = self.MEMO_MAX
        feats = self.features
        apply = m.apply
        enabled = m.enabled
        recover = m.check_recoverable
        vio = m.vio
        n = self.canon.size
        pos = self.budget_pos
        # budget_class() folded into per-kind budget slots (-1: no budget to spend);
        # a switch spends one only when a running thread is switched out.
        slot_of = self.budget_slots()
        switch_slot = pos.get("switch", -1)
        cur = m.cur
        t0 = time.perf_counter()
        key0 = key_of(m.new_state()) + self.budget_init
        ids: dict[bytes, int] = {key0: 0}
        parents = array("l", [-1])
        keys: list[bytes] = [key0]
        frontier: list[int] = [0]
        depth = 0
        transitions = 0
        max_depth = self.bounds.depth
        complete = True
        stop = ""
        peak = _rss_mb()
        last_report = t0
        while frontier:
            if max_depth is not None and depth >= max_depth:
                complete = False
                stop = f"depth bound {max_depth} reached"
                break
            nxt: list[int] = []
            for sid in frontier:
                key = keys[sid]
                st = list(key[:n])
                budgets = key[n:]
                for a in enabled(st, feats):
                    bud = budgets
                    if a[0] == SCHED:
                        i = switch_slot if st[cur[a[1]]] else -1
                    else:
                        i = slot_of.get(a[0], -1)
                    if i >= 0:
                        if not budgets[i]:
                            continue
                        bb = bytearray(budgets)
                        bb[i] -= 1
                        bud = bytes(bb)
                    s = st.copy()
                    apply(s, a)
                    transitions += 1
                    k2 = None
                    if not vio:
                        try:
                            raw = bytes(s)
                        except ValueError:  # a version past 255: the slow path
                            k2 = key_of(s) + bud
                        else:
                            ck = memo_get(raw)
                            if ck is None:
                                if len(memo) >= memo_max:
                                    memo.clear()
                                ck = memo[raw] = key_bytes(raw)
                            k2 = ck + bud
                        if k2 in ids:
                            continue
                        # Recoverability is a property of the equivalence class:
                        # test it once per new canonical state, not per transition.
                        recover(s)
                    if vio:
                        v = vio[0]
                        vio.clear()
                        path = self._path(parents, keys, sid, v.invariant)
                        res = CheckResult(m.policy.name, self.mutant, self.bounds, len(keys),
                                          transitions, depth + 1, False,
                                          time.perf_counter() - t0, None, path, "violation",
                                          max(peak, _rss_mb()))
                        res.violation = {"invariant": v.invariant,
                                         "message": self.path_message or v.message}
                        return res
                    if True:
                        ids[k2] = len(keys)
                        keys.append(k2)
                        parents.append(sid)
                        nxt.append(len(keys) - 1)
                nk = len(keys)
                if self.max_states is not None and nk >= self.max_states:
                    complete = False
                    stop = f"state limit {self.max_states} reached"
                    break
                if nk & 0x3FFF == 0 or (self.progress is not None and sid & 0x3FF == 0):
                    now = time.perf_counter()
                    if nk & 0x3FFF == 0:
                        rss = _rss_mb()
                        peak = max(peak, rss)
                        if rss > self.max_memory_mb:
                            complete = False
                            stop = f"memory limit {self.max_memory_mb:.0f} MB reached"
                            break
                    if self.progress is not None and now - last_report > 0.25:
                        last_report = now
                        self.progress(nk, transitions, depth)
            if not complete:
                break
            frontier = nxt
            if frontier:
                depth += 1
        peak = max(peak, _rss_mb())
        if self.progress is not None:
            self.progress(len(keys), transitions, depth)
        return CheckResult(m.policy.name, self.mutant, self.bounds, len(keys), transitions,
                           depth, complete, time.perf_counter() - t0, None, [], stop, peak)

    def _path(self, parents: array, keys: list[bytes], sid: int,
              invariant: str) -> list[tuple[int, int, int]]:
        """Real-label actions from the initial state through state ``sid`` to a violation.

        Canonical states hide which relabelling produced them, so the path is
        rebuilt by replaying from the real initial state and, at each step,
        taking the action whose canonical successor is the next state on the
        canonical path.
        """
        chain = []
        i = sid
        while i >= 0:
            chain.append(keys[i])
            i = parents[i]
        chain.reverse()
        return self._path_from_chain(chain, invariant)

    def _path_from_chain(self, chain: list[bytes], invariant: str
                         ) -> list[tuple[int, int, int]]:
        """The real-label path along canonical keys ``chain`` (initial state first),
        then the step that breaks ``invariant``."""
        m = self.m
        s = m.new_state()
        budgets = self.budget_init
        actions: list[tuple[int, int, int]] = []
        for target in chain[1:]:
            for a, x, bud in self._real_successors(s, budgets):
                if self.canon.key(x) + bud == target:
                    s, budgets = x, bud
                    actions.append(a)
                    break
            else:  # pragma: no cover - would be a canonicalisation bug
                raise RuntimeError("could not rebuild the counterexample path")
        for a, x, _bud in self._real_successors(s, budgets):
            if not m.vio:
                m.check_recoverable(x)
            hit = [v for v in m.vio if v.invariant == invariant]
            m.vio.clear()
            if hit:
                actions.append(a)
                # The search saw this violation on a relabelled representative, whose
                # message may name the other of two identical tasks; the story is told
                # in real labels, so the message is taken from this replay.
                self.path_message = hit[0].message
                return actions
        raise RuntimeError("could not rebuild the violating step")  # pragma: no cover

    def _real_successors(self, s: list[int], budgets: bytes):
        """Successors of a real (non-canonical) state, violations left in m.vio."""
        m = self.m
        pos = self.budget_pos
        for a in m.enabled(s, self.features):
            bud = budgets
            if pos:
                cls = budget_class(m, s, a)
                if cls is not None and cls in pos:
                    i = pos[cls]
                    if not budgets[i]:
                        continue
                    bb = bytearray(budgets)
                    bb[i] -= 1
                    bud = bytes(bb)
            x = s.copy()
            m.vio.clear()
            m.apply(x, a)
            yield a, x, bud
            m.vio.clear()
