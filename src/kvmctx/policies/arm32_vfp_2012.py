"""arm32-vfp-2012: lazy VFP switching for KVM on 32-bit Arm (seed 004, 2012).

Source: seed 004, "[PATCH v3] ARM: KVM: lazy VFP switching" (Antonios
Motakis, Rusty Russell; applied to kvmarm v10-stage): arch/arm/kvm/
interrupts.S store_vfp_state/restore_vfp_state, set_hcptr, the hyp trap
switch_to_guest_vfp, __kvm_vcpu_run/__kvm_vcpu_return.

The design:
  entry:  push the host's FPEXC, set FPEXC.EN (so the guest traps to hyp, not
          to its own Undef handler), set HCPTR.TCP10/TCP11;
  trap:   clear TCP10/11, store the host VFP state in vcpu->arch.vfp_host,
          restore the guest's from vcpu->arch.vfp_guest, ERET;
  exit:   if the traps were clear (the guest used VFP) store the guest's and
          restore the host's; pop FPEXC (restoring the host's EN).
State: d0-d31 + FPSCR (VFPv3-D32), FPEXC, and FPINST/FPINST2 only when
FPEXC.EX (and FP2V); 272 bytes.

The host is arm32's own lazy VFP (vfp_support_entry on FPEXC.EN traps,
vfp_current_hw_state[cpu] as the per-CPU owner, a save at context switch
when VFP was enabled). No SVE, no kernel-mode NEON (it came to arm32 in
2013), no VHE.

Differs from its neighbour arm64-4.17: same lazy trap-and-swap shape, but
32-bit: HCPTR cp10/cp11 instead of CPTR_EL2.TFP, the host's FPEXC.EN
enable bit pushed and popped around the guest (v2's fix: "Fix clobbering
the host's FPEXC_EN on entry"), the VFP subarchitecture's FPINST state, and
the host state stashed in the vCPU rather than a per-CPU host context.
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.layout import TAG_LO
from kvmctx.policies.base import Policy, StateField, Step

INTERRUPTS_S = "arch/arm/kvm/interrupts.S"
HOST_ARM32 = H.HOST_4_17.but(era="arm32 v3.6 (2012)", arm32_lazy_vfp=True, save_to_bound=True,
                             syscall_sve=H.SYSCALL_DISCARD)
VFP_BYTES = 272  # d0-d31 (256) + FPEXC, FPSCR, FPINST, FPINST2


def _sub(m):
    from kvmctx.model.feat import vfp_subarch

    return vfp_subarch if hasattr(m, "vfp_ex") else None


def store_vfp(m, s, k, slot_lo: int, c: int, honour_ex: bool = True) -> None:
    s[slot_lo] = s[m.lo[k]]
    sub = _sub(m)
    if sub is not None:
        sub.store_vfp_state(m, s, k, c, honour_ex)
    m.ctr[C.SAVES] += 1
    m.ctr[C.BYTES_SAVED] += m.fpsimd_bytes[c]


def restore_vfp(m, s, k, slot_lo: int, c: int) -> None:
    s[m.lo[k]] = s[slot_lo]
    s[m.hi[k]] = 0
    sub = _sub(m)
    if sub is not None:
        sub.restore_vfp_state(m, s, k, c)
    m.ctr[C.RESTORES] += 1
    m.ctr[C.BYTES_RESTORED] += m.fpsimd_bytes[c]


def vcpu_run_entry(m, s, k, t):
    """__kvm_vcpu_run: push FPEXC, set FPEXC.EN; set_hcptr 1 (TCP10/TCP11)."""
    s[m.pf["fpexc_pushed"][k]] = s[m.vfp_en[k]]
    s[m.vfp_en[k]] = 1
    s[m.gtrap[k]] = 1
    m.ctr[C.TRAP_WRITES] += 2


def switch_to_guest_vfp(m, s, k, t, v, sve):
    """hyp trap on cp10/cp11: clear TCP10/11, host VFP -> vfp_host, guest VFP loaded."""
    s[m.gtrap[k]] = 0
    m.ctr[C.TRAP_WRITES] += 1
    c = m.vctx[v]
    host_slot = m.pf["vfp_host"][v]
    store_vfp(m, s, k, host_slot, t)
    restore_vfp(m, s, k, m.mem_lo[c], c)


def vcpu_return(m, s, k, t):
    """__kvm_vcpu_return: if the guest used VFP, guest -> vfp_guest and host back
    from vfp_host; then pop FPEXC (the host's EN)."""
    v = m.vcpu_of[t]
    c = m.vctx[v]
    if not s[m.gtrap[k]]:
        store_vfp(m, s, k, m.mem_lo[c], c)
        restore_vfp(m, s, k, m.pf["vfp_host"][v], t)
    s[m.gtrap[k]] = 1
    s[m.vfp_en[k]] = s[m.pf["fpexc_pushed"][k]]
    m.ctr[C.TRAP_WRITES] += 2


POLICY = Policy(
    name="arm32-vfp-2012",
    source="seed 004: [PATCH v3] ARM: KVM: lazy VFP switching (A. Motakis, R. Russell, 2012)",
    summary="HCPTR cp10/cp11 trap on first guest VFP use; hyp swaps host and guest VFP "
            "(FPINST/FPINST2 only when FPEXC.EX); every exit after use swaps back",
    differs="vs arm64-4.17: 32-bit VFPv3-D32 state, HCPTR instead of CPTR_EL2.TFP, the "
            "host's FPEXC.EN pushed/popped around the guest, host state stashed in the vCPU, "
            "arm32's own lazy host VFP",
    host=HOST_ARM32,
    arch="arm32",
    supports=frozenset({"preempt", "migration", "exit-user", "vfp-subarch"}),
    cpu_fields={"fpexc_pushed": StateField(0)},
    vcpu_fields={"vfp_host": StateField(0, TAG_LO, stash=True)},
    guest_entry=(Step(vcpu_run_entry, "push FPEXC; FPEXC.EN = 1; set_hcptr 1 (TCP10|TCP11)",
                      f"{INTERRUPTS_S}: __kvm_vcpu_run"),),
    hyp_fp_trap=switch_to_guest_vfp,
    hyp_exit=(Step(vcpu_return, "if VFP used: store guest, restore host; pop FPEXC",
                   f"{INTERRUPTS_S}: __kvm_vcpu_return"),),
)
