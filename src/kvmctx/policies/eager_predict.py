"""Eager guest FP restore driven by a predictor, made safe: a family beyond the seeds.

Seed 002 proposed restoring the guest's FPSIMD state before entry when the
vCPU "trapped FP last time", and the review asked for "metrics on the
accuracy of the prediction". These policies answer it. Each is upstream-6.14
plus one step at guest entry, in hyp with IRQs masked, right after the trap
configuration: if the guest does not own the registers and the predictor
says it will use FP in the coming run, restore the guest's state now and
enter with FP untrapped (exactly what the trap handler would do a moment
later). Placed there - not in vcpu_load, where tang-eager-2018 breaks - it
cannot expose guest values to the host: the host state was already saved
and unbound at vcpu_load, and nothing runs on the CPU before the ERET.

What a predictor can observe: a run entered lazily after a prediction (the
guest did not own the registers, the predictor said no) tells whether the
guest used FP - it trapped or it did not. A run entered eagerly tells
nothing (no trap either way), and neither does a run the guest entered
already owning the registers (it uses them without trapping). Predictors
learn only from the first kind.

* ``eager-last-trap``: Tang's rule - eager iff the last lazy run trapped;
  an eager run resets it (so runs alternate under steady FP use, as posted).
* ``eager-counter``: a 2-bit saturating counter per vCPU, incremented on a
  trapping lazy run, decremented on a clean one and after an eager run (to
  keep sampling); eager iff >= 2.
* ``eager-ewma``: an exponentially weighted average of FP use per lazy run,
  alpha = 1/4, in 1/16 steps, decayed by 1/8 after an eager run; eager iff
  >= 8/16.
* ``eager-perfect``: knows whether the coming run will use FP (the
  simulator tells it; with no hint, as in the checker, it never predicts).
  It bounds what any predictor on this design can gain.
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.policies.base import Policy, StateField, Step
from kvmctx.policies.upstream_6_14 import FP_STATE_GUEST_OWNED, hyp_handle_fpsimd
from kvmctx.policies.upstream_6_14 import POLICY as UPSTREAM

HYP = "arch/arm64/kvm/hyp/include/hyp/switch.h"

# Predictor kinds
LAST_TRAP, COUNTER, EWMA, PERFECT = "last-trap", "counter", "ewma", "perfect"


def _predict(m, s, v: int, kind: str) -> bool:
    f = m.pf
    if kind == LAST_TRAP:
        return bool(s[f["pred"][v]])
    if kind == COUNTER:
        return s[f["pred"][v]] >= 2
    if kind == EWMA:
        return s[f["pred"][v]] >= 8
    hint = getattr(m, "oracle_hint", None)
    return bool(hint[v]) if hint is not None else False


def _learn(m, s, v: int, kind: str, used: bool) -> None:
    f = m.pf["pred"]
    x = s[f[v]]
    if kind == LAST_TRAP:
        s[f[v]] = 1 if used else 0
    elif kind == COUNTER:
        s[f[v]] = min(3, x + 1) if used else max(0, x - 1)
    elif kind == EWMA:
        # x in 1/16 steps, alpha = 1/4, rounded so 0 and 16 are reachable
        s[f[v]] = x + (16 - x + 3) // 4 if used else x - (x + 3) // 4


def _decay(m, s, v: int, kind: str) -> None:
    """After an eager run (no observation): drift towards lazy, so the predictor
    keeps sampling lazily now and then instead of locking in (Tang's rule does
    this by resetting the counter after every eager restore)."""
    f = m.pf["pred"]
    x = s[f[v]]
    if kind == COUNTER:
        s[f[v]] = max(0, x - 1)
    elif kind == EWMA:
        s[f[v]] = x - (x + 7) // 8


def make_entry_step(kind: str) -> Step:
    def eager_entry(m, s, k, t):
        """Predict; if the guest will use FP, restore its state before entering."""
        v = m.vcpu_of[t]
        f = m.pf
        s[f["eager"][v]] = 0
        s[f["trapped"][v]] = 0
        if s[f["fp_owner"][k]] == FP_STATE_GUEST_OWNED:
            s[f["eager"][v]] = 2  # nothing to predict, nothing to learn from this run
            return
        guess = _predict(m, s, v, kind)
        log = getattr(m, "pred_log", None)
        if log is not None:
            log.append((v, guess))
        if guess:
            hyp_handle_fpsimd(m, s, k, t, v, m.vcpu_sve[v])
            s[f["eager"][v]] = 1
            m.ctr[C.EAGER_RESTORES] += 1
            if kind == LAST_TRAP:
                s[f["pred"][v]] = 0  # "vcpu->last_fpsimd_trap = 0"

    return Step(eager_entry, f"predict ({kind}); if FP expected: restore guest, untrap", HYP)


def make_trap(kind: str):
    def trap(m, s, k, t, v, sve):
        s[m.pf["trapped"][v]] = 1
        hyp_handle_fpsimd(m, s, k, t, v, sve)

    return trap


def make_exit_step(kind: str) -> Step:
    def learn_at_exit(m, s, k, t):
        """A lazily entered run tells whether the guest used FP."""
        v = m.vcpu_of[t]
        f = m.pf
        e = s[f["eager"][v]]
        if e == 0:
            _learn(m, s, v, kind, bool(s[f["trapped"][v]]))
        elif e == 1:
            _decay(m, s, v, kind)
        s[f["eager"][v]] = 0
        s[f["trapped"][v]] = 0

    return Step(learn_at_exit, f"predictor ({kind}) learns from a lazy run", HYP)


def _policy(kind: str) -> Policy:
    base = UPSTREAM
    return base.but(
        name=f"eager-{kind}",
        source="beyond the seeds: seed 002's predictor, made safe on upstream-6.14",
        summary=f"upstream-6.14 + eager guest FP restore at entry (IRQs masked) when a "
                f"{kind} predictor expects FP use",
        differs="vs tang-eager-2018: the eager restore happens in hyp right before ERET, after "
                "the host state was saved at vcpu_load, so it cannot leak; vs upstream-6.14: "
                "one predicted restore replaces the trap",
        vcpu_fields={"pred": StateField(0), "eager": StateField(0), "trapped": StateField(0)},
        guest_entry=base.guest_entry + (make_entry_step(kind),),
        hyp_fp_trap=make_trap(kind),
        hyp_exit=base.hyp_exit + (make_exit_step(kind),),
        options={"predictor": kind},
    )


LAST_TRAP_POLICY = _policy(LAST_TRAP)
COUNTER_POLICY = _policy(COUNTER)
EWMA_POLICY = _policy(EWMA)
PERFECT_POLICY = _policy(PERFECT)
