"""The policy interface: one KVM FP-switching design, as hooks on one flow.

A policy is data: which host kernel it runs on (``HostConfig``), the extra
state it keeps (per-CPU, per-thread, per-vCPU fields), and the code of each
KVM hook as a short sequence of ``Step``s. The model inlines those steps into
the generic KVM_RUN flow (``kvmctx.model.flow``); between two steps of a hook
the thread may be interrupted exactly as the real code allows, which the
step's ``gap`` says.

A step function has the signature ``fn(m, s, k, t)``: the model, the flat
state, the CPU and the current thread. It mutates ``s`` and returns
``None`` (fall through to the next step). The vCPU the thread runs is
``m.vcpu_of[t]``; its context id ``m.vctx[v]``.

Gaps (what may land in the gap *before* a step while the thread sits there):

* ``GAP_DEFAULT``: the hook's calling context decides (vcpu_load/put: IRQs
  on, preemption off, so a softirq may run; IRQ-off hooks: nothing).
* ``GAP_NONE``: nothing (the step continues under local_bh_disable or with
  IRQs still masked).
* ``GAP_SOFTIRQ``: a softirq may run here (IRQs and bottom halves enabled).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kvmctx.model.host import HOST_6_14, HostConfig

GAP_DEFAULT = "default"
GAP_NONE = "none"
GAP_SOFTIRQ = "softirq"

# Every model feature a design may support (see kvmctx.model.config.FEATURES).
ALL_FEATURES = frozenset({
    "sve", "guest-sve", "softirq-neon", "kernel-neon", "preempt", "migration", "signals",
    "ptrace", "exec", "hotplug", "pm", "exit-user", "guest-vl", "sysregs", "sme",
    "vcpu-reset", "one-reg", "fpmr",
    "trap-window", "ret-window", "isb",
    "sme-regsets", "sig-frames", "vl", "fork", "vmm-respawn",
})

StepFn = Callable[[Any, list[int], int, int], Any]
TrapFn = Callable[[Any, list[int], int, int, int, bool], Any]


@dataclass(frozen=True)
class Step:
    fn: StepFn
    name: str            # what the line does, as a kernel engineer would name it
    where: str = ""      # source location ("arch/arm64/kvm/fpsimd.c: kvm_arch_vcpu_load_fp")
    gap: str = GAP_DEFAULT
    # Context the step runs in, for WARN_ON conditions over (in_softirq, irqs_disabled).
    irqs_off: bool | None = None
    bh_off: bool | None = None


def _noop(m: Any, s: list[int], k: int, t: int) -> None:
    return None


@dataclass(frozen=True)
class StateField:
    """A field a policy adds to the state. ``ref`` is a layout REF_*/TAG_* kind."""

    init: int = 0
    ref: str | None = None
    stash: bool = False   # holds a register image (counts for recoverability)


@dataclass(frozen=True)
class Policy:
    name: str
    source: str          # seed or commit
    summary: str
    differs: str         # how it differs from its neighbour in the design history
    host: HostConfig = HOST_6_14
    arch: str = "arm64"
    cpu_fields: dict[str, StateField] = field(default_factory=dict)
    thread_fields: dict[str, StateField] = field(default_factory=dict)
    vcpu_fields: dict[str, StateField] = field(default_factory=dict)
    # Hooks, in the order the run loop calls them
    vcpu_load: tuple[Step, ...] = ()      # kvm_arch_vcpu_load (preempt off, IRQs on)
    ctxflush: tuple[Step, ...] = ()       # run loop, IRQs off, before entry
    guest_entry: tuple[Step, ...] = ()    # hyp: __activate_traps (trap config)
    hyp_fp_trap: TrapFn | None = None     # hyp: guest FP/SVE access trap handler
    hyp_exit: tuple[Step, ...] = ()       # hyp: world switch back to the host
    ctxsync: tuple[Step, ...] = ()        # run loop, IRQs still off, after exit
    post_exit: tuple[Step, ...] = ()      # after local_irq_enable(), preempt off
    run_exit: tuple[Step, ...] = ()       # KVM_RUN returning, before vcpu_put
    vcpu_put: tuple[Step, ...] = ()       # kvm_arch_vcpu_put (preempt off)
    # Model features the design can express (others are rejected with exit 2).
    supports: frozenset[str] = ALL_FEATURES
    # Extra contexts whose save area/binding may legitimately hold context c's
    # state (recoverability), e.g. Dall's design pages the guest state into
    # the VMM task's thread struct. fn(m, s, c) -> tuple of ctx ids.
    aliases: Callable[[Any, list[int], int], tuple[int, ...]] | None = None
    # A design's own invariant over whole states (checked with recoverability):
    # fn(m, s) -> None, reporting through m.violate().
    check: Callable[[Any, list[int]], None] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def but(self, **changes: Any) -> Policy:
        """A variant: same policy with some fields replaced (mutants use this)."""
        return replace(self, **changes)

    def hooks(self) -> dict[str, tuple[Step, ...]]:
        return {
            "vcpu_load": self.vcpu_load, "ctxflush": self.ctxflush,
            "guest_entry": self.guest_entry, "hyp_exit": self.hyp_exit,
            "ctxsync": self.ctxsync, "post_exit": self.post_exit,
            "run_exit": self.run_exit, "vcpu_put": self.vcpu_put,
        }


def replace_step(steps: tuple[Step, ...], name_part: str, new: Step | None) -> tuple[Step, ...]:
    """Return ``steps`` with the step whose name contains ``name_part`` replaced (or dropped)."""
    out: list[Step] = []
    hit = False
    for st in steps:
        if not hit and name_part in st.name:
            hit = True
            if new is not None:
                out.append(new)
        else:
            out.append(st)
    if not hit:
        raise KeyError(f"no step named like {name_part!r}")
    return tuple(out)


NOOP = _noop
