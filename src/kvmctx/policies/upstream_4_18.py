"""upstream-4.18: Dave Martin's design as merged in Linux v4.18 (e6b673b741ea).

Source: "KVM: arm64: Optimise FPSIMD handling to reduce guest/host thrashing"
(e6b673b741ea) and its series in v4.18: arch/arm64/kvm/fpsimd.c
(kvm_arch_vcpu_run_map_fp, _load_fp, _ctxsync_fp, _put_fp),
arch/arm64/kvm/hyp/switch.c (update_fp_enabled, __hyp_switch_fpsimd), with
the review fixes that landed with it: 2955bcc8c309 (clear TIF_SVE while the
vCPU state is bound), b3eb56b629d1 (restore the host's EL0 SVE trap on put),
b045e4d0f392 (save in vcpu_put under local_irq_save, not local_bh_disable).

Differs from its neighbour martin-rfc-2018 (the RFC it grew from): the
guest state is no longer saved at every exit; ctxsync binds it to the CPU
and clears TIF_FOREIGN_FPSTATE so the host saves it only when someone else
needs the registers (context switch, kernel-mode NEON) or at vcpu_put; hyp
reads the host's TIF_FOREIGN_FPSTATE itself (update_fp_enabled) instead of
being told by the run loop; host SVE state is saved by hyp in the host
task's own SVE buffer (VHE only).

Flags (vcpu->arch.flags): FP_ENABLED (guest state live in the registers),
FP_HOST (host state live, must be saved before loading the guest's),
HOST_SVE_IN_USE (TIF_SVE at load), HOST_SVE_ENABLED (EL0 SVE untrapped at
load).
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.values import TO_SAVE_FPSIMD
from kvmctx.policies.base import ALL_FEATURES, Policy, StateField, Step

KVM_FPSIMD = "arch/arm64/kvm/fpsimd.c"
HYP_SWITCH = "arch/arm64/kvm/hyp/switch.c"


def load_fp(m, s, k, t):
    """kvm_arch_vcpu_load_fp: assume the host's state is live until hyp learns better."""
    v = m.vcpu_of[t]
    f = m.pf
    s[f["fp_enabled"][v]] = 0
    s[f["fp_host"][v]] = 1
    s[f["host_sve_in_use"][v]] = 1 if s[m.tif_sve[t]] else 0
    s[f["host_sve_enabled"][v]] = 1 if s[m.zen[k]] else 0


def activate_traps(m, s, k, t):
    """__activate_traps + update_fp_enabled: host state foreign? then nothing to save."""
    v = m.vcpu_of[t]
    f = m.pf
    if s[m.foreign[t]]:
        s[f["fp_enabled"][v]] = 0
        s[f["fp_host"][v]] = 0
    s[m.gtrap[k]] = 0 if s[f["fp_enabled"][v]] else 1
    if m.config.vhe:
        s[m.zen[k]] = 0  # CPACR_EL1.ZEN cleared for the guest (shared with host EL0)
    m.ctr[C.TRAP_WRITES] += 1


def hyp_switch_fpsimd(m, s, k, t, v, sve):
    """__hyp_switch_fpsimd: save the host's live state into its task, load the guest's."""
    f = m.pf
    s[m.gtrap[k]] = 0
    m.ctr[C.TRAP_WRITES] += 1
    m.ctr[C.ISBS] += 1
    if s[f["fp_host"][v]]:
        if m.config.vhe and s[f["host_sve_in_use"][v]]:
            # sve_save_state(sve_pffr(thread), ...): the VMM thread's own SVE buffer.
            s[m.mem_zlo[t]] = s[m.lo[k]]
            s[m.mem_hi[t]] = s[m.hi[k]]
            s[m.fp_type[t]] = 1  # SVE form (what TIF_SVE will say when it is reloaded)
            m.ctr[C.SAVES] += 1
            m.ctr[C.SVE_SAVES] += 1
            m.ctr[C.BYTES_SAVED] += m.sve_bytes[t]
        else:
            H.save_fpsimd_to(m, s, k, m.mem_lo[t], t)
        s[f["fp_host"][v]] = 0
    H.load_state(m, s, k, m.vctx[v], False, 0)
    s[f["fp_enabled"][v]] = 1


def deactivate_traps(m, s, k, t):
    """__deactivate_traps: CPACR_EL1 back to CPACR_EL1_DEFAULT (EL0 SVE trapped)."""
    if m.config.vhe:
        s[m.zen[k]] = 0


def ctxsync_fp(m, s, k, t):
    """kvm_arch_vcpu_ctxsync_fp: bind the guest state; TIF_SVE off while it is bound."""
    if m.irqs_off is False:
        m.violate("no-bug", "kvm_arch_vcpu_ctxsync_fp(): WARN_ON_ONCE(!irqs_disabled())", k, (t,))
    v = m.vcpu_of[t]
    if s[m.pf["fp_enabled"][v]]:
        c = m.vctx[v]
        H.fpsimd_bind_state_to_cpu(m, s, k, c, TO_SAVE_FPSIMD, m.ctx_vq[c])
        s[m.foreign[t]] = 0
        s[m.tif_sve[t]] = 0


def put_fp(m, s, k, t):
    """kvm_arch_vcpu_put_fp (local_irq_save): write back the guest state, or restore
    the host's EL0 SVE trap that hyp clobbered; then TIF_SVE as it was at load."""
    v = m.vcpu_of[t]
    f = m.pf
    if s[f["fp_enabled"][v]]:
        H.fpsimd_save_user_state(m, s, k)
        H.fpsimd_flush_cpu_state(m, s, k)
    elif m.config.vhe:
        zen = s[f["host_sve_enabled"][v]]
        if s[m.zen[k]] != zen:
            s[m.zen[k]] = zen
            m.ctr[C.TRAP_WRITES] += 1
    s[m.tif_sve[t]] = s[f["host_sve_in_use"][v]]


def _vf(init: int = 0) -> StateField:
    return StateField(init)


POLICY = Policy(
    name="upstream-4.18",
    source="Linux v4.18: e6b673b741ea (+2955bcc8c309, b3eb56b629d1, b045e4d0f392)",
    summary="guest state bound to the CPU after exit and saved lazily by the host; hyp saves "
            "the host state only if live (FP_HOST) and sees TIF_FOREIGN_FPSTATE itself",
    differs="vs martin-rfc-2018: no guest save at every exit, ctxsync binding with "
            "TIF_FOREIGN_FPSTATE cleared, save at vcpu_put; vs upstream-6.14: the host save "
            "is lazy (in hyp, when FP_HOST) rather than unconditional at vcpu_load",
    host=H.HOST_4_18,
    supports=ALL_FEATURES - {"guest-sve", "guest-vl", "sme", "fpmr"},
    vcpu_fields={"fp_enabled": _vf(), "fp_host": _vf(), "host_sve_in_use": _vf(),
                 "host_sve_enabled": _vf()},
    vcpu_load=(Step(load_fp, "flags: FP_HOST, HOST_SVE_IN_USE/ENABLED from TIF_SVE and CPACR",
                    f"{KVM_FPSIMD}: kvm_arch_vcpu_load_fp"),),
    guest_entry=(Step(activate_traps, "update_fp_enabled(); trap FP unless FP_ENABLED",
                      f"{HYP_SWITCH}: __activate_traps"),),
    hyp_fp_trap=hyp_switch_fpsimd,
    hyp_exit=(Step(deactivate_traps, "CPACR_EL1 = CPACR_EL1_DEFAULT (VHE)",
                   f"{HYP_SWITCH}: __deactivate_traps"),),
    ctxsync=(Step(ctxsync_fp, "if FP_ENABLED: bind vcpu state, clear TIF_FOREIGN, TIF_SVE",
                  f"{KVM_FPSIMD}: kvm_arch_vcpu_ctxsync_fp"),),
    vcpu_put=(Step(put_fp, "if FP_ENABLED: save + flush; else restore ZEN_EL0; TIF_SVE back",
                   f"{KVM_FPSIMD}: kvm_arch_vcpu_put_fp"),),
)
