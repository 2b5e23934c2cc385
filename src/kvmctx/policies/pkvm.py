"""pkvm: protected KVM (kvm-arm.mode=protected), the v6.14 flow with hyp owning
the host's FP state.

Source: arch/arm64/kvm/hyp/nvhe/hyp-main.c (fpsimd_sve_sync /
flush_hyp_vcpu / sync_hyp_vcpu), arch/arm64/kvm/hyp/include/hyp/switch.h
(kvm_hyp_handle_fpsimd: ``if (is_protected_kvm_enabled() &&
host_owns_fp_regs()) kvm_hyp_save_fpsimd_host(vcpu)``), with the host side
of upstream-6.14 (host state saved and flushed at vcpu_load).

Differs from its neighbour upstream-6.14: the host kernel is not trusted
with guest state. If the host still owns the registers at the trap, hyp
saves them into its private host_data; when __kvm_vcpu_run returns to the
host, hyp saves the guest's registers into its own copy of the vCPU and
puts the host's back (fp_owner = HOST_OWNED). ctxsync therefore never binds
guest state into the host, vcpu_put has nothing to save, and every run that
used FP costs a guest save and a host restore at exit. Protected mode is
nVHE.

Its own invariant: the host never holds guest values - no CPU running host
code has a guest-owned value in its registers, and no host task's saved
image holds one.
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.flow import K_GUEST
from kvmctx.model.layout import TAG_HI, TAG_LO
from kvmctx.model.values import OWNER_MASK, ZERO
from kvmctx.policies.base import Policy, StateField, Step
from kvmctx.policies.upstream_6_14 import (
    FP_STATE_FREE,
    FP_STATE_GUEST_OWNED,
    FP_STATE_HOST_OWNED,
    ctxflush_fp,
    load_fp_owner_free,
    load_fp_save_flush,
)

HYP_MAIN = "arch/arm64/kvm/hyp/nvhe/hyp-main.c"
HYP_SWITCH = "arch/arm64/kvm/hyp/include/hyp/switch.h"


def activate_traps(m, s, k, t):
    s[m.gtrap[k]] = 0 if s[m.pf["fp_owner"][k]] == FP_STATE_GUEST_OWNED else 1
    m.ctr[C.TRAP_WRITES] += 1


def hyp_handle_fpsimd(m, s, k, t, v, sve):
    """kvm_hyp_handle_fpsimd (protected): save the host's registers in hyp if it
    still owns them, restore the guest's."""
    f = m.pf
    s[m.gtrap[k]] = 0
    m.ctr[C.TRAP_WRITES] += 1
    m.ctr[C.ISBS] += 1
    if s[f["fp_owner"][k]] == FP_STATE_HOST_OWNED:
        s[f["hyp_host_fp"][k]] = s[m.lo[k]]
        s[f["hyp_host_sve"][k]] = s[m.hi[k]]
        m.ctr[C.SAVES] += 1
        m.ctr[C.BYTES_SAVED] += m.sve_bytes[t]
    c = m.vctx[v]
    if m.vcpu_sve[v]:
        H.load_state(m, s, k, c, True, s[m.gvl[v]])
    else:
        H.load_state(m, s, k, c, False, 0)
    if m.has_fpmr:
        s[m.fpmr[k]] = s[m.mem_fpmr[c]]   # the guest's FPMR with its registers
    s[f["fp_owner"][k]] = FP_STATE_GUEST_OWNED


def fpsimd_sve_sync(m, s, k, t):
    """handle___kvm_vcpu_run -> fpsimd_sve_sync: guest registers into hyp's copy of
    the vCPU, host registers back from host_data, fp_owner = HOST_OWNED."""
    f = m.pf
    if s[f["fp_owner"][k]] != FP_STATE_GUEST_OWNED:
        return
    v = m.vcpu_of[t]
    c = m.vctx[v]
    m.ctr[C.SAVES] += 1
    m.ctr[C.RESTORES] += 1
    if m.vcpu_sve[v]:
        s[m.vl[k]] = m.ctx_vq[c]  # __hyp_sve_save_guest at the vCPU's max VL
        s[m.mem_zlo[c]] = s[m.lo[k]]
        s[m.mem_hi[c]] = s[m.hi[k]]
        s[m.fp_type[c]] = 1
        m.ctr[C.SVE_SAVES] += 1
        m.ctr[C.BYTES_SAVED] += m.sve_bytes[c]
    else:
        s[m.mem_lo[c]] = s[m.lo[k]]
        s[m.fp_type[c]] = 0
        m.ctr[C.BYTES_SAVED] += m.fpsimd_bytes[c]
    if m.has_fpmr:
        # __vcpu_sys_reg(vcpu, FPMR) = read_sysreg_s(SYS_FPMR); the host's FPMR back
        # from host_data (a host value: the VMM reloads its own, TIF_FOREIGN_FPSTATE set).
        s[m.mem_fpmr[c]] = s[m.fpmr[k]]
        s[m.fpmr[k]] = ZERO
    s[m.lo[k]] = s[f["hyp_host_fp"][k]]
    s[m.hi[k]] = s[f["hyp_host_sve"][k]]
    m.ctr[C.BYTES_RESTORED] += m.sve_bytes[t]
    s[f["fp_owner"][k]] = FP_STATE_HOST_OWNED


def no_guest_values_in_host(m, s):
    """Protected mode's promise: guest values are never visible to the host."""
    vctx = set(m.vctx)
    for k in range(m.ncpu):
        t = s[m.cur[k]]
        if t and m.p_kind[s[m.pc[t]]] == K_GUEST:
            continue
        for bank, idx in (("FPSIMD", m.lo[k]), ("SVE", m.hi[k])):
            o = s[idx] & OWNER_MASK
            if o in vctx:
                m.violate("confidentiality", f"pKVM: CPU{k} runs host code with {bank} "
                          f"registers holding {m.tagname(s[idx])}, a guest value", k, (o,))
                return
    for t in range(1, m.nthreads):
        for idx in (m.mem_lo[t], m.mem_zlo[t], m.mem_hi[t]):
            o = s[idx] & OWNER_MASK
            if o in vctx:
                m.violate("confidentiality", f"pKVM: host task {m.tname(t)}'s saved image "
                          f"holds {m.tagname(s[idx])}, a guest value", -1, (t, o))
                return


POLICY = Policy(
    name="pkvm",
    source="Linux v6.14 protected mode: hyp/nvhe/hyp-main.c fpsimd_sve_sync, "
           "hyp/include/hyp/switch.h kvm_hyp_handle_fpsimd",
    summary="hyp saves/restores the host FP state itself; guest state is saved into hyp's "
            "vCPU copy at every exit that used FP and never bound into the host",
    differs="vs upstream-6.14: no ctxsync binding and no save at vcpu_put; instead a guest "
            "save and host restore in hyp at every exit after FP use (nVHE only)",
    host=H.HOST_6_14,
    cpu_fields={"fp_owner": StateField(FP_STATE_FREE),
                "hyp_host_fp": StateField(0, TAG_LO, stash=True),
                "hyp_host_sve": StateField(0, TAG_HI, stash=True)},
    vcpu_load=(
        Step(load_fp_save_flush, "fpsimd_save_and_flush_cpu_state()",
             "arch/arm64/kvm/fpsimd.c: kvm_arch_vcpu_load_fp"),
        Step(load_fp_owner_free, "fp_owner = FP_STATE_FREE",
             "arch/arm64/kvm/fpsimd.c: kvm_arch_vcpu_load_fp"),
    ),
    ctxflush=(Step(ctxflush_fp, "if TIF_FOREIGN_FPSTATE: fp_owner = FREE",
                   "arch/arm64/kvm/fpsimd.c: kvm_arch_vcpu_ctxflush_fp"),),
    guest_entry=(Step(activate_traps, "trap FP/SVE unless GUEST_OWNED",
                      f"{HYP_SWITCH}: __activate_cptr_traps"),),
    hyp_fp_trap=hyp_handle_fpsimd,
    hyp_exit=(Step(fpsimd_sve_sync, "if GUEST_OWNED: save guest in hyp, restore host, "
                                    "fp_owner = HOST_OWNED", f"{HYP_MAIN}: fpsimd_sve_sync"),),
    check=no_guest_values_in_host,
    options={"mode": "nvhe"},
)
