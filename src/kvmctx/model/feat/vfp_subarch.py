"""vfp-subarch: the arm32 VFP subarchitecture's pending exception state (seed 004).

On VFP implementations with the common VFP subarchitecture, an instruction
can "bounce" to support code: FPEXC.EX is set and FPINST (and FPINST2 when
FPEXC.FP2V) hold the instruction(s) to emulate. That state belongs to the
context that executed the instruction and must survive a context switch:
FPINST/FPINST2 are saved and restored *only* when FPEXC.EX is set, because
reading them otherwise is UNPREDICTABLE (seed 004: "reads of FPINST and
FPINST2 are unpredictable when FPEXC.EX is not set"), and FPEXC is written
last on restore.

Events: the guest's VFP instruction bounces (EX set, FPINST written), and the
guest's support code consumes it (reads FPINST, clears EX). The invariant:
while the guest can run VFP code, a pending bounce it raised is still there
with its own FPINST, and no bounce it did not raise is.
"""

from __future__ import annotations

from kvmctx.model.features import ActionSpec, Feature, register
from kvmctx.model.flow import K_GUEST
from kvmctx.model.values import OWNER_BITS

TAG_VFPINST = "tag_vfpinst"
GVFP_BOUNCE = 41
GVFP_SUPPORT = 42


def _enabled(m, s, k, t, pc, kind, out) -> None:
    if kind != K_GUEST:
        return
    c = m.vctx[m.vcpu_of[t]]
    if s[m.want_ex[c]]:
        out.append((GVFP_SUPPORT, k, 0))
    else:
        out.append((GVFP_BOUNCE, k, 0))


def _trap_if_needed(m, s, k, t) -> None:
    if s[m.gtrap[k]]:
        m.guest_trap(s, k, t, False)


def _bounce(m, s, a) -> None:
    k = a[1]
    t = s[m.cur[k]]
    _trap_if_needed(m, s, k, t)
    c = m.vctx[m.vcpu_of[t]]
    v = s[m.ver[c]] + 1
    s[m.ver[c]] = v
    tg = (v << OWNER_BITS) | c
    s[m.vfp_ex[k]] = 1
    s[m.vfp_inst[k]] = tg
    s[m.want_ex[c]] = 1
    s[m.want_inst[c]] = tg


def _support(m, s, a) -> None:
    k = a[1]
    t = s[m.cur[k]]
    _trap_if_needed(m, s, k, t)
    c = m.vctx[m.vcpu_of[t]]
    # The read itself is checked by _check_cpu before the step (state invariant).
    s[m.vfp_ex[k]] = 0
    s[m.want_ex[c]] = 0


def _check_cpu(m, s, k) -> None:
    t = s[m.cur[k]]
    if not t or m.p_kind[s[m.pc[t]]] != K_GUEST or s[m.gtrap[k]]:
        return
    c = m.vctx[m.vcpu_of[t]]
    if s[m.want_ex[c]]:
        if not s[m.vfp_ex[k]]:
            m.violate("integrity", f"{m.name(c)} on CPU{k}: its pending VFP bounce is gone "
                      "(FPEXC.EX clear): the instruction is never emulated", k, (c,))
        elif s[m.vfp_inst[k]] != s[m.want_inst[c]]:
            m.violate("integrity", f"{m.name(c)} on CPU{k} reads FPINST = "
                      f"{m.tagname(s[m.vfp_inst[k]])}, not {m.tagname(s[m.want_inst[c]])}",
                      k, (c,))
    elif s[m.vfp_ex[k]]:
        m.violate("integrity", f"{m.name(c)} on CPU{k} sees FPEXC.EX set by a bounce it never "
                  f"raised (FPINST = {m.tagname(s[m.vfp_inst[k]])})", k, (c,))


def _text_bounce(m, s, a) -> str:
    t = s[m.cur[a[1]]]
    return f"{m.name(m.vctx[m.vcpu_of[t]])}: VFP instruction bounces (FPEXC.EX, FPINST)"


def _text_support(m, s, a) -> str:
    t = s[m.cur[a[1]]]
    return f"{m.name(m.vctx[m.vcpu_of[t]])}: VFP support code reads FPINST, clears EX"


def store_vfp_state(m, s, k, c, honour_ex: bool = True) -> None:
    """store_vfp_state: FPINST/FPINST2 only when FPEXC.EX; EX cleared before the
    data registers are read."""
    ex = s[m.vfp_ex[k]] if honour_ex else 0
    s[m.mem_vfp_ex[c]] = ex
    if ex:
        s[m.mem_vfp_inst[c]] = s[m.vfp_inst[k]]
    s[m.vfp_ex[k]] = 0


def restore_vfp_state(m, s, k, c) -> None:
    """restore_vfp_state: FPINST/FPINST2 only when the saved FPEXC has EX; FPEXC last."""
    if s[m.mem_vfp_ex[c]]:
        s[m.vfp_inst[k]] = s[m.mem_vfp_inst[c]]
    s[m.vfp_ex[k]] = s[m.mem_vfp_ex[c]]


register(Feature(
    name="vfp-subarch",
    fields=(
        ("vfp_ex", "cpu.fpexc.ex", "cpu", 0, None),
        ("vfp_inst", "cpu.fpinst", "cpu", 0, TAG_VFPINST),
        ("mem_vfp_ex", "ctx.vfp.fpexc_ex", "ctx", 0, None),
        ("mem_vfp_inst", "ctx.vfp.fpinst", "ctx", 0, TAG_VFPINST),
        ("want_inst", "ghost.latest.fpinst", "ctx", 0, TAG_VFPINST),
        ("want_ex", "ghost.bounce_pending", "ctx", 0, None),
    ),
    actions={
        GVFP_BOUNCE: ActionSpec("guest-vfp-bounce", _bounce, _text_bounce, budget="vfp"),
        GVFP_SUPPORT: ActionSpec("guest-vfp-support", _support, _text_support),
    },
    enabled=_enabled,
    check_cpu=_check_cpu,
    banks=((TAG_VFPINST, "want_inst"),),
))
