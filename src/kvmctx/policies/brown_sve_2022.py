"""brown-sve-2022: Mark Brown's "arm64/sve: Clean up KVM integration and optimise
syscalls" (seed 003, v1, 2022-06-07), on the v5.19-era KVM flow (fp_state
FREE / HOST_OWNED / GUEST_OWNED per vCPU, host state saved lazily by hyp).

What the series changes (its seven patches, as the cover letter describes):

1. KVM discards any SVE state when entering a guest (fpsimd_kvm_prepare():
   TIF_SVE cleared, the task's image converted to FPSIMD form);
2. ``thread.fp_type`` records which form the saved state is in, separately
   from TIF_SVE;
3./4. KVM says explicitly which registers to save for the bound vCPU state
   (``to_save``) instead of toggling the VMM task's TIF_SVE;
5. loads follow ``fp_type``;
6./7. a syscall keeps SVE enabled and does not flush the SVE registers when
   no context switch happens (if one does, the save stores only the FPSIMD
   view, which the syscall ABI allows); a sysctl restores the old
   discard-on-syscall behaviour.

Differs from its neighbour upstream-4.18: the SVE bookkeeping (fp_type,
to_save, no TIF_SVE games in KVM), the syscall fast path, and the v5.19 KVM
flow (fp_state tri-state, HOST_SVE_ENABLED cleared at every load).
``DISCARD_SYSCTL`` (brown-sve-2022-discard) is the same with the sysctl set.
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.values import FP_STATE_FPSIMD, TO_SAVE_FPSIMD, TO_SAVE_SVE
from kvmctx.policies.base import ALL_FEATURES, Policy, StateField, Step

FREE, HOST_OWNED, GUEST_OWNED = 0, 1, 2
KVM_FPSIMD = "arch/arm64/kvm/fpsimd.c"
HYP_SWITCH = "arch/arm64/kvm/hyp/include/hyp/switch.h"


def load_fp(m, s, k, t):
    """kvm_arch_vcpu_load_fp: fpsimd_kvm_prepare(); fp_state = HOST_OWNED; sample ZEN."""
    v = m.vcpu_of[t]
    if s[m.tif_sve[t]]:
        # fpsimd_kvm_prepare(): drop SVE for the task; its image becomes FPSIMD.
        s[m.tif_sve[t]] = 0
        s[m.mem_lo[t]] = s[m.mem_zlo[t]]
        s[m.fp_type[t]] = FP_STATE_FPSIMD
    s[m.pf["fp_state"][v]] = HOST_OWNED
    s[m.pf["host_sve_enabled"][v]] = 1 if s[m.zen[k]] else 0


def ctxflush_fp(m, s, k, t):
    """kvm_arch_vcpu_ctxflush_fp: someone used FP while we were preemptible."""
    if s[m.foreign[t]]:
        s[m.pf["fp_state"][m.vcpu_of[t]]] = FREE


def activate_traps(m, s, k, t):
    v = m.vcpu_of[t]
    s[m.gtrap[k]] = 0 if s[m.pf["fp_state"][v]] == GUEST_OWNED else 1
    if m.config.vhe:
        s[m.zen[k]] = 0
    m.ctr[C.TRAP_WRITES] += 1


def hyp_handle_fpsimd(m, s, k, t, v, sve):
    """kvm_hyp_handle_fpsimd: write out the host state if it is in the registers,
    then restore the guest's."""
    f = m.pf["fp_state"]
    s[m.gtrap[k]] = 0
    m.ctr[C.TRAP_WRITES] += 1
    m.ctr[C.ISBS] += 1
    if s[f[v]] == HOST_OWNED:
        H.save_fpsimd_to(m, s, k, m.mem_lo[t], t)  # vcpu->arch.host_fpsimd_state
    c = m.vctx[v]
    if m.vcpu_sve[v]:
        H.load_state(m, s, k, c, True, s[m.gvl[v]])
    else:
        H.load_state(m, s, k, c, False, 0)
    s[f[v]] = GUEST_OWNED


def hyp_exit(m, s, k, t):
    """Exit: VHE hosts run under ZCR_EL2 (the vCPU max); nVHE keeps the guest's
    ZCR_EL1 until vcpu_put (the eager switch came in 2025)."""
    v = m.vcpu_of[t]
    if m.config.vhe:
        if m.vcpu_sve[v] and s[m.pf["fp_state"][v]] == GUEST_OWNED:
            s[m.vl[k]] = m.ctx_vq[m.vctx[v]]
        s[m.zen[k]] = 0


def ctxsync_fp(m, s, k, t):
    """kvm_arch_vcpu_ctxsync_fp: bind the vCPU state, saying what to save."""
    v = m.vcpu_of[t]
    if s[m.pf["fp_state"][v]] == GUEST_OWNED:
        c = m.vctx[v]
        H.fpsimd_bind_state_to_cpu(m, s, k, c, TO_SAVE_SVE if m.vcpu_sve[v] else TO_SAVE_FPSIMD,
                                   m.ctx_vq[c])
        s[m.foreign[t]] = 0


def put_fp(m, s, k, t):
    """kvm_arch_vcpu_put_fp: save+flush a guest-owned state (nVHE: VL back to max
    first); otherwise restore the EL0 SVE trap seen at load (VHE)."""
    v = m.vcpu_of[t]
    if s[m.pf["fp_state"][v]] == GUEST_OWNED:
        if m.vcpu_sve[v] and not m.config.vhe:
            s[m.vl[k]] = m.ctx_vq[m.vctx[v]]
        H.fpsimd_save_and_flush_cpu_state(m, s, k)
    elif m.config.vhe:
        zen = s[m.pf["host_sve_enabled"][v]]
        if s[m.zen[k]] != zen:
            s[m.zen[k]] = zen
            m.ctr[C.TRAP_WRITES] += 1


def _policy(name: str, discard: bool) -> Policy:
    host = H.HOST_SEED_003
    if discard:
        host = host.but(era="seed 003 (2022), discard-on-syscall sysctl set",
                        syscall_sve=H.SYSCALL_DISCARD)
    return Policy(
        name=name,
        source="seed 003: [PATCH v1 0/7] arm64/sve: Clean up KVM integration and optimise "
               "syscalls (Mark Brown, 2022-06-07)" + (", sysctl set" if discard else ""),
        summary="fp_type (saved form) separate from TIF_SVE, KVM says to_save, SVE kept "
                "across syscalls without a context switch; v5.19 KVM fp_state flow"
                + ("; discard-on-syscall sysctl" if discard else ""),
        differs="vs upstream-4.18: SVE bookkeeping by fp_type/to_save instead of TIF_SVE, "
                "the syscall fast path, fp_state tri-state; vs upstream-6.14: host state "
                "still saved lazily in hyp, ZCR not switched eagerly",
        host=host,
        supports=ALL_FEATURES - {"sme", "fpmr"},
        vcpu_fields={"fp_state": StateField(FREE), "host_sve_enabled": StateField(0)},
        vcpu_load=(Step(load_fp, "fpsimd_kvm_prepare(); fp_state = HOST_OWNED; "
                                 "HOST_SVE_ENABLED from CPACR",
                        f"{KVM_FPSIMD}: kvm_arch_vcpu_load_fp"),),
        ctxflush=(Step(ctxflush_fp, "if TIF_FOREIGN_FPSTATE: fp_state = FREE",
                       f"{KVM_FPSIMD}: kvm_arch_vcpu_ctxflush_fp"),),
        guest_entry=(Step(activate_traps, "trap FP/SVE unless GUEST_OWNED",
                          f"{HYP_SWITCH}: __activate_traps"),),
        hyp_fp_trap=hyp_handle_fpsimd,
        hyp_exit=(Step(hyp_exit, "deactivate traps (VHE: host runs at ZCR_EL2)",
                       f"{HYP_SWITCH}: __deactivate_traps"),),
        ctxsync=(Step(ctxsync_fp, "bind vCPU state with to_save, clear TIF_FOREIGN",
                      f"{KVM_FPSIMD}: kvm_arch_vcpu_ctxsync_fp"),),
        vcpu_put=(Step(put_fp, "if GUEST_OWNED: save + flush; else restore ZEN_EL0",
                       f"{KVM_FPSIMD}: kvm_arch_vcpu_put_fp"),),
        options={"discard_sysctl": discard},
    )


POLICY = _policy("brown-sve-2022", discard=False)
DISCARD_SYSCTL = _policy("brown-sve-2022-discard", discard=True)
