"""Feature modules: optional parts of the model that add state, events and checks.

The core (``machine.py``) knows CPUs, threads, vCPUs, FPSIMD/SVE banks,
syscalls, kernel-mode NEON, context switches and the KVM_RUN flow. Signals,
ptrace, exec, CPU hotplug and PM, SME, the guest's vector length and the
deferred system registers are *features*: each is one module that declares

* ``fields``: extra state fields (same form as ``Model.MODEL_FIELDS``: a
  model attribute, a name, a dimension, an initial value and what the value
  refers to), allocated only when the feature is on;
* ``actions``: ``{kind: ActionSpec}`` with fixed kind numbers (they are
  stored in counterexample files, so they never change meaning);
* ``enabled(m, s, k, t, pc, kind, out)``: append the feature's actions that
  are possible on CPU k (current thread t at program point pc, point kind);
* ``enabled_global(m, s, running, out)``: actions not tied to what a CPU
  runs (ptrace on a stopped task, a CPU going offline...);
* optional ``check_cpu(m, s, k)`` and ``check_state(m, s)`` invariant hooks,
  ``init(m, s)`` to set initial values, and ``banks``: extra tag banks, each
  ``(tag ref kind, want attribute)`` so the checker renumbers their versions.

A feature is on when the model configuration lists it (``ModelConfig.features``)
and the policy supports it; its events then appear in both engines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# (attribute, name, dimension, initial value, reference kind[, feature it needs])
FieldSpec = tuple


@dataclass(frozen=True)
class ActionSpec:
    name: str
    handler: Callable[[Any, list[int], tuple[int, int, int]], None]
    text: Callable[[Any, list[int], tuple[int, int, int]], str]
    budget: str | None = None    # checker budget class this action spends
    cpu_arg: bool = True         # a[1] is the CPU the action runs on (invariant check)


@dataclass
class Feature:
    name: str
    fields: tuple[FieldSpec, ...] = ()
    actions: dict[int, ActionSpec] = field(default_factory=dict)
    enabled: Callable[..., None] | None = None
    enabled_global: Callable[..., None] | None = None
    check_cpu: Callable[..., None] | None = None
    check_state: Callable[..., None] | None = None
    init: Callable[..., None] | None = None
    banks: tuple[tuple[str, str], ...] = ()
    # Second references: (tag ref kind, attribute of a THREAD-dim tag field) whose
    # value an invariant will later compare with a stale tag of the same owner
    # (a signal frame: sigreturn makes its value the latest again). The checker
    # keeps those tags apart from other stale ones (kvmctx.engines.canon).
    extra_wants: tuple[tuple[str, str], ...] = ()
    # Steps appended to the flow's hooks ("vcpu_load", "vcpu_put", "guest_entry",
    # "hyp_exit"): fn(m) -> tuple of kvmctx.model.policy.Step, given the built model.
    steps: Callable[[Any], dict[str, tuple[Any, ...]]] | None = None
    # Called in __schedule() after fpsimd_thread_switch: fn(m, s, k, prev, next).
    on_switch: Callable[..., None] | None = None


_REGISTRY: dict[str, Feature] = {}
_KINDS: dict[int, str] = {}

FIRST_FEATURE_KIND = 16


def register(f: Feature) -> Feature:
    if f.name in _REGISTRY:
        raise ValueError(f"feature {f.name} registered twice")
    for kind in f.actions:
        if kind < FIRST_FEATURE_KIND or kind in _KINDS:
            raise ValueError(f"action kind {kind} of {f.name} clashes")
        _KINDS[kind] = f.name
    _REGISTRY[f.name] = f
    return f


def get(name: str) -> Feature | None:
    _load_all()
    return _REGISTRY.get(name)


def action_owner(kind: int) -> str | None:
    _load_all()
    return _KINDS.get(kind)


def all_actions() -> dict[int, ActionSpec]:
    _load_all()
    out: dict[int, ActionSpec] = {}
    for f in _REGISTRY.values():
        out.update(f.actions)
    return out


_loaded = False


def _load_all() -> None:
    """Import the feature modules (each registers itself)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    import pkgutil

    import kvmctx.model.feat as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"kvmctx.model.feat.{info.name}")
