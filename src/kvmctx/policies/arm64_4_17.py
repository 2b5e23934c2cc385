"""arm64-4.17: the lazy trap-and-swap that seed 000 replaces (Linux <= v4.17).

Source: arch/arm64/kvm/hyp/entry.S (__fpsimd_guest_restore),
arch/arm64/kvm/hyp/switch.c (__activate_traps, __kvm_vcpu_run), as quoted
in seed 000 patch 1/2 (the asm being converted to C) and the cover letter:
"the host and guest FPSIMD state must be fully swapped on each iteration
of the run loop".

Differs from its neighbour (martin-rfc-2018, which keeps the guest state
live and binds it to the CPU): the host never learns what the registers
hold. Every entry sets CPTR_EL2.TFP; the first guest FP access traps to
hyp, which saves the host FPSIMD registers in the per-CPU host context and
loads the guest's; every exit after such a trap saves the guest's and
restores the host's, with IRQs masked, before the host runs again. Host SVE
state that the guest's V-register writes clobbered is dealt with by
dropping the CPU binding when its task uses SVE (sve_flush_cpu_state()),
which is sound here only because every syscall (KVM_RUN included) discards
the caller's SVE state.
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.layout import TAG_LO
from kvmctx.policies.base import ALL_FEATURES, Policy, StateField, Step

ENTRY_S = "arch/arm64/kvm/hyp/entry.S"
SWITCH_C = "arch/arm64/kvm/hyp/switch.c"


def activate_traps(m, s, k, t):
    """__activate_traps: CPTR_EL2.TFP set on every entry (VHE: CPACR FPEN/ZEN clear)."""
    s[m.gtrap[k]] = 1
    if m.config.vhe:
        s[m.zen[k]] = 0
    m.ctr[C.TRAP_WRITES] += 1


def fpsimd_guest_restore(m, s, k, t, v, sve):
    """__fpsimd_guest_restore: clear TFP, save host FPSIMD, load the guest's."""
    s[m.gtrap[k]] = 0
    m.ctr[C.TRAP_WRITES] += 1
    m.ctr[C.ISBS] += 1
    c = m.vctx[v]
    # host_cpu_context is this CPU's kvm_host_cpu_state (set at vcpu_load).
    H.save_fpsimd_to(m, s, k, m.pf["host_fpsimd"][k], t)
    H.load_state(m, s, k, c, False, 0)


def hyp_exit_switch_back(m, s, k, t):
    """__kvm_vcpu_run exit: if FP was enabled, save the guest's, restore the host's."""
    if not s[m.gtrap[k]]:
        v = m.vcpu_of[t]
        c = m.vctx[v]
        s[m.mem_lo[c]] = s[m.lo[k]]
        m.ctr[C.SAVES] += 1
        m.ctr[C.BYTES_SAVED] += m.fpsimd_bytes[c]
        H.restore_fpsimd_from(m, s, k, m.pf["host_fpsimd"][k], t)
    if m.config.vhe:
        s[m.zen[k]] = 0  # __deactivate_traps: CPACR_EL1_DEFAULT, EL0 SVE trapped


def fpsimd_flush_sve(m, s, k, t):
    """kvm_fpsimd_flush_cpu_state -> sve_flush_cpu_state: the host's upper Z bits
    may be gone; if the bound task uses SVE, make it reload from memory."""
    b = s[m.bound[k]]
    if b and b < m.nthreads and s[m.tif_sve[b]]:
        H.fpsimd_flush_cpu_state(m, s, k)


POLICY = Policy(
    name="arm64-4.17",
    source="seed 000 (the code patch 1/2 converts; Linux v4.17 arch/arm64/kvm/hyp)",
    summary="trap on the first guest FP use per run; hyp saves host FPSIMD and loads the "
            "guest's; every exit after use saves the guest's and restores the host's",
    differs="vs martin-rfc-2018: host and guest state fully swapped on every run-loop "
            "iteration that used FP; the host kernel never knows whose state is live",
    host=H.HOST_4_17,
    # vCPU SVE arrived in v5.2: a v4.17 host cannot give a guest SVE.
    supports=ALL_FEATURES - {"guest-sve", "sme", "fpmr"},
    cpu_fields={"host_fpsimd": StateField(0, TAG_LO, stash=True)},
    guest_entry=(Step(activate_traps, "set CPTR_EL2.TFP", f"{SWITCH_C}: __activate_traps"),),
    hyp_fp_trap=fpsimd_guest_restore,
    hyp_exit=(
        Step(hyp_exit_switch_back, "if FP enabled: save guest, restore host FPSIMD",
             f"{SWITCH_C}: __kvm_vcpu_run"),
        Step(fpsimd_flush_sve, "sve_flush_cpu_state()", "virt/kvm/arm/arm.c"),
    ),
)
