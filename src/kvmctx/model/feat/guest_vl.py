"""guest-vl: the guest programs ZCR_EL1 for a smaller SVE vector length.

A guest with SVE may lower its own VL at any time (ZCR_EL1). The live
registers then have the guest's VL, not the vCPU's maximum that KVM binds
the state with, and whether the host sees the smaller VL after the exit
depends on the design (catalogue entry 22, 59419f10045b: before the eager
ZCR switch an nVHE host's kernel-mode NEON save compared the live VL with
the bound VL, warned, and SIGKILLed the VMM).
"""

from __future__ import annotations

from kvmctx.model.features import ActionSpec, Feature, register
from kvmctx.model.flow import K_GUEST

GVL = 24


def _enabled(m, s, k, t, pc, kind, out) -> None:
    if kind != K_GUEST:
        return
    v = m.vcpu_of[t]
    if m.vcpu_sve[v] and m.ctx_vq[m.vctx[v]] > 1 and s[m.gvl[v]] != 1:
        out.append((GVL, k, 0))


def _apply(m, s, a) -> None:
    k = a[1]
    t = s[m.cur[k]]
    v = m.vcpu_of[t]
    s[m.gvl[v]] = 1
    if not s[m.gtrap[k]]:
        # The guest owns the registers: the live VL drops with ZCR_EL1.
        s[m.vl[k]] = 1


def _text(m, s, a) -> str:
    t = s[m.cur[a[1]]]
    return f"{m.name(m.vctx[m.vcpu_of[t]])}: guest writes ZCR_EL1 (VL 128)"


register(Feature(
    name="guest-vl",
    actions={GVL: ActionSpec("guest-set-vl", _apply, _text, budget="guest-vl")},
    enabled=_enabled,
))
