"""upstream-6.14: the current upstream flow (Linux v6.14, 2025).

Source: arch/arm64/kvm/fpsimd.c, arch/arm64/kvm/hyp/include/hyp/switch.h and
arch/arm64/kernel/fpsimd.c as of v6.14, after Mark Rutland's 2025 fixes
fbc7e61195e2 ("KVM: arm64: Unconditionally save+flush host
FPSIMD/SVE/SME state") and 59419f10045b ("KVM: arm64: Eagerly switch
ZCR_EL{1,2}"); protocol.md section 3, "Modern flow".

Differs from its neighbour (the pre-2025 6.x flow, i.e. upstream-4.18 with
fp_owner): the host's live FP state is saved and unbound at every
vcpu_load, so the hyp trap handler never saves host state and the host is
always FP_STATE_FREE when the guest first touches FP; the guest's ZCR is
switched eagerly at every entry/exit so the live VL on return to the host
always matches the binding.

The flow, per KVM_RUN (each numbered line a Step below):
  1. vcpu_load: fpsimd_save_and_flush_cpu_state(); fp_owner = FREE.
  2. run loop (IRQs off): if TIF_FOREIGN_FPSTATE: fp_owner = FREE.
  3. entry: trap FP/SVE unless fp_owner == GUEST_OWNED.
  4. hyp trap: disable the trap, restore the guest's FPSIMD or SVE state,
     fp_owner = GUEST_OWNED (no full exit).
  5. exit: hyp puts ZCR back to the vCPU's max VL; ctxsync (IRQs still off)
     binds the vCPU state to the CPU and clears TIF_FOREIGN_FPSTATE, so the
     host's own machinery saves it on a context switch or kernel-mode NEON.
  6. vcpu_put: if the guest owns the registers, save and flush them.
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.values import TO_SAVE_FPSIMD, TO_SAVE_SVE
from kvmctx.policies.base import Policy, StateField, Step

FP_STATE_FREE = 0
FP_STATE_HOST_OWNED = 1
FP_STATE_GUEST_OWNED = 2

KVM_FPSIMD = "arch/arm64/kvm/fpsimd.c"
HYP_SWITCH = "arch/arm64/kvm/hyp/include/hyp/switch.h"
ARM_C = "arch/arm64/kvm/arm.c"


def load_fp_save_flush(m, s, k, t):
    """kvm_arch_vcpu_load_fp: save the host's live state and unbind it."""
    H.fpsimd_save_and_flush_cpu_state(m, s, k)


def load_fp_owner_free(m, s, k, t):
    s[m.pf["fp_owner"][k]] = FP_STATE_FREE


def ctxflush_fp(m, s, k, t):
    """kvm_arch_vcpu_ctxflush_fp: someone used FP while we were preemptible."""
    if s[m.foreign[t]]:
        s[m.pf["fp_owner"][k]] = FP_STATE_FREE


def activate_traps(m, s, k, t):
    """__activate_cptr_traps: trap FP/SVE unless the guest owns the registers."""
    s[m.gtrap[k]] = 0 if s[m.pf["fp_owner"][k]] == FP_STATE_GUEST_OWNED else 1
    if m.config.vhe:
        s[m.zen[k]] = 0  # CPACR_EL1 (CPTR_EL2 under VHE) is shared with host EL0
    m.ctr[C.TRAP_WRITES] += 1


def hyp_handle_fpsimd(m, s, k, t, v, sve):
    """kvm_hyp_handle_fpsimd: the guest touched FP; give it its registers."""
    s[m.gtrap[k]] = 0
    m.ctr[C.TRAP_WRITES] += 1
    m.ctr[C.ISBS] += 1
    c = m.vctx[v]
    if m.vcpu_sve[v]:
        # __hyp_sve_restore_guest: ZCR_EL2 = max VL, ZCR_EL1 = the guest's.
        H.load_state(m, s, k, c, True, s[m.gvl[v]])
    else:
        H.load_state(m, s, k, c, False, 0)
    if m.has_fpmr:
        s[m.fpmr[k]] = s[m.mem_fpmr[c]]   # if (kvm_has_fpmr(...)) write_sysreg_s(FPMR)
    s[m.pf["fp_owner"][k]] = FP_STATE_GUEST_OWNED


def hyp_exit_zcr(m, s, k, t):
    """fpsimd_lazy_switch_to_host (59419f10045b): live VL back to the vCPU max."""
    v = m.vcpu_of[t]
    if m.vcpu_sve[v] and s[m.pf["fp_owner"][k]] == FP_STATE_GUEST_OWNED:
        s[m.vl[k]] = m.ctx_vq[m.vctx[v]]


def deactivate_traps(m, s, k, t):
    """__deactivate_cptr_traps: host CPTR back; EL0 SVE stays trapped until a rebind."""
    if m.config.vhe:
        s[m.zen[k]] = 0


def ctxsync_fp(m, s, k, t):
    """kvm_arch_vcpu_ctxsync_fp: hand the live guest state to the host machinery."""
    if s[m.pf["fp_owner"][k]] == FP_STATE_GUEST_OWNED:
        v = m.vcpu_of[t]
        c = m.vctx[v]
        to_save = TO_SAVE_SVE if m.vcpu_sve[v] else TO_SAVE_FPSIMD
        H.fpsimd_bind_state_to_cpu(m, s, k, c, to_save, m.ctx_vq[c])
        s[m.foreign[t]] = 0


def put_fp(m, s, k, t):
    """kvm_arch_vcpu_put_fp (IRQs saved): write back and unbind the guest state."""
    if s[m.pf["fp_owner"][k]] == FP_STATE_GUEST_OWNED:
        H.fpsimd_save_and_flush_cpu_state(m, s, k)


POLICY = Policy(
    name="upstream-6.14",
    source="Linux v6.14 (fbc7e61195e2, 59419f10045b); protocol.md section 3",
    summary="host FP saved+flushed at vcpu_load; guest state restored lazily by the hyp "
            "trap, bound to the CPU after exit, saved on context switch/kernel NEON/vcpu_put",
    differs="vs pre-2025 6.x: no lazy host save in the hyp trap (the host is always FREE "
            "at first guest use); ZCR switched eagerly at entry/exit",
    host=H.HOST_6_14,
    cpu_fields={"fp_owner": StateField(FP_STATE_FREE)},
    vcpu_load=(
        Step(load_fp_save_flush, "fpsimd_save_and_flush_cpu_state()",
             f"{KVM_FPSIMD}: kvm_arch_vcpu_load_fp"),
        Step(load_fp_owner_free, "fp_owner = FP_STATE_FREE",
             f"{KVM_FPSIMD}: kvm_arch_vcpu_load_fp"),
    ),
    ctxflush=(Step(ctxflush_fp, "if TIF_FOREIGN_FPSTATE: fp_owner = FREE",
                   f"{KVM_FPSIMD}: kvm_arch_vcpu_ctxflush_fp"),),
    guest_entry=(Step(activate_traps, "trap FP/SVE unless fp_owner == GUEST_OWNED",
                      f"{HYP_SWITCH}: __activate_cptr_traps"),),
    hyp_fp_trap=hyp_handle_fpsimd,
    hyp_exit=(Step(hyp_exit_zcr, "ZCR back to the vCPU's max VL",
                   f"{HYP_SWITCH}: fpsimd_lazy_switch_to_host"),
              Step(deactivate_traps, "host CPTR/CPACR restored (EL0 SVE trapped)",
                   f"{HYP_SWITCH}: __deactivate_cptr_traps")),
    ctxsync=(Step(ctxsync_fp, "bind the vCPU state to the CPU, clear TIF_FOREIGN_FPSTATE",
                  f"{KVM_FPSIMD}: kvm_arch_vcpu_ctxsync_fp"),),
    vcpu_put=(Step(put_fp, "if GUEST_OWNED: fpsimd_save_and_flush_cpu_state()",
                   f"{KVM_FPSIMD}: kvm_arch_vcpu_put_fp"),),
)
