"""vcpu-reset and one-reg: KVM resets a vCPU, and user space reads and writes its registers.

Two features, following arch/arm64/kvm/{arm.c,reset.c,guest.c} of v6.14:

* ``vcpu-reset``. Another vCPU's PSCI CPU_ON (kvm_psci_vcpu_on) stores the
  reset payload and makes KVM_REQ_VCPU_RESET pending on the target (kind 50,
  a global event: the caller is not modelled, there is one vCPU). The target's
  run loop serves it in check_vcpu_requests(), preemptible with IRQs on, before
  the next entry (the request check is a step at the loop top, ``loop_top``);
  kvm_reset_vcpu() then runs as a segment of the flow (label VRESET,
  ``kvmctx.model.flow._reset_segment``) with preemption disabled:

      kvm_arch_vcpu_put()            the design's vcpu_put hook, vcpu->cpu = -1
      --- softirq gap ---
      reset the image                kvm_vcpu_reset_sve() memsets sve_state,
                                     kvm_reset_vcpu_core() memsets fp_regs,
                                     kvm_reset_sys_regs() (FPMR and the EL1
                                     sysregs when those features are on)
      --- softirq gap ---
      kvm_arch_vcpu_load()           vcpu->cpu = cpu, the design's vcpu_load hook
      --- softirq gap ---
      preempt_enable()               back to the loop top (preemptible)

  The reset is a write: the vCPU's latest value becomes the architectural
  zero. Before e761a927bc9a (``HostConfig.reset_puts_vcpu``) the image was
  reset with the vCPU still loaded: state live in the registers survives the
  reset and is saved over it (or the guest keeps running on it).

* ``one-reg``. The VMM thread at EL0 (its vCPU not loaded: KVM_RUN holds
  vcpu->mutex, so no other ioctl overlaps a run) calls KVM_SET_ONE_REG on an
  FP register (kind 51): KVM_REG_ARM_CORE V[n] into vcpu->arch.ctxt.fp_regs
  for an FPSIMD vCPU, KVM_REG_ARM64_SVE_ZREG into sve_state for an SVE vCPU
  (V[n] core accesses are refused for SVE vCPUs). It is a syscall: the thread
  is then in the kernel (``L_SYS``) and returns through ret_to_user.
  KVM_GET_ONE_REG is a read, so like every read in the model it is an
  invariant rather than an event: whenever user space could call it (the VMM
  thread outside KVM_RUN) it must return the vCPU's latest values from the
  image; with a reset pending it must return what the vCPU will run with
  (6826c6849b46 serves the pending reset first, ``one_reg_serves_reset``;
  before it GET returned the pre-reset registers and SET was wiped by the
  reset at the next KVM_RUN). A design that keeps guest state live past
  vcpu_put is caught here (GET reads a stale image) and by the reset (the
  reload saves the live pre-reset state over the reset image).

Budget class ``vcpu-reset`` for CPU_ON requests, ``one-reg`` for SET_ONE_REG.
"""

from __future__ import annotations

from kvmctx.model import counters as C
from kvmctx.model import host as H
from kvmctx.model.features import ActionSpec, Feature, register
from kvmctx.model.flow import K_USER
from kvmctx.model.layout import VCPU
from kvmctx.model.policy import Step
from kvmctx.model.values import OWNER_BITS, ZERO

PSCI_CPU_ON = 50
SET_ONE_REG = 51

RESET_C = "arch/arm64/kvm/reset.c"
ARM_C = "arch/arm64/kvm/arm.c"


def reset_image(m, s, v: int) -> None:
    """kvm_reset_vcpu()'s register part on vCPU v's saved image: zeroes everywhere."""
    c = m.vctx[v]
    s[m.mem_lo[c]] = ZERO
    if m.vcpu_sve[v]:
        s[m.mem_zlo[c]] = ZERO
        s[m.mem_hi[c]] = ZERO
    s[m.want_lo[c]] = ZERO
    s[m.want_hi[c]] = ZERO
    s[m.permit[c]] = 0
    if m.config.has("fpmr"):
        s[m.mem_fpmr[c]] = ZERO          # kvm_reset_sys_regs(): FPMR resets to 0
        s[m.want_fpmr[c]] = ZERO
    if m.config.has("sysregs"):
        s[m.msr1[c]] = s[m.want_sr1[c]] = ZERO
        s[m.msr0[c]] = s[m.want_sr0[c]] = ZERO
    m.ctr[C.VCPU_RESETS] += 1


# ------------------------------------------------------------------ run loop


def check_reset_request(m, s, k, t):
    """check_vcpu_requests(): KVM_REQ_VCPU_RESET -> kvm_reset_vcpu()."""
    v = m.vcpu_of[t]
    if s[m.reset_pending[v]]:
        s[m.reset_pending[v]] = 0
        return m.L_VRESET
    return None


def st_reset_image(m, s, k, t):
    """Reset the image: kvm_vcpu_reset_sve(), kvm_reset_vcpu_core(), kvm_reset_sys_regs()."""
    reset_image(m, s, m.vcpu_of[t])


def _steps(m) -> dict[str, tuple[Step, ...]]:
    return {
        "loop_top": (Step(check_reset_request, "check_vcpu_requests(): KVM_REQ_VCPU_RESET",
                          f"{ARM_C}: check_vcpu_requests"),),
        "vcpu_reset": (Step(st_reset_image, "reset the image: fp_regs and sve_state zeroed, "
                            "sysregs reset", f"{RESET_C}: kvm_reset_vcpu"),),
    }


def _init(m, s) -> None:
    m.L_VRESET = m.prog.labels["VRESET"]


def _cpu_on_enabled(m, s, running, out) -> None:
    for v in range(m.nvcpu):
        if not s[m.reset_pending[v]]:
            out.append((PSCI_CPU_ON, v, 0))


def _cpu_on(m, s, a) -> None:
    s[m.reset_pending[a[1]]] = 1


register(Feature(
    name="vcpu-reset",
    fields=(("reset_pending", "vcpu.KVM_REQ_VCPU_RESET", VCPU, 0, None),),
    actions={PSCI_CPU_ON: ActionSpec(
        "psci-cpu-on", _cpu_on, lambda m, s, a:
        f"another vCPU: PSCI CPU_ON {m.name(m.vctx[a[1]])}: reset payload stored, "
        "KVM_REQ_VCPU_RESET pending", budget="vcpu-reset", cpu_arg=False)},
    enabled_global=_cpu_on_enabled,
    steps=_steps,
    init=_init,
))


# ------------------------------------------------------------------ ONE_REG


def _outside_run(m, s, t: int) -> bool:
    pc = s[m.pc[t]]
    return m.p_kind[pc] == K_USER or pc == m.L_SYS


def _pending(m, s, v: int) -> bool:
    return m.config.has("vcpu-reset") and bool(s[m.reset_pending[v]])


def _set_enabled(m, s, k, t, pc, kind, out) -> None:
    if kind == K_USER and m.vcpu_of[t] >= 0:
        out.append((SET_ONE_REG, k, 0))


def _set_one_reg(m, s, a) -> None:
    k = a[1]
    t = s[m.cur[k]]
    v = m.vcpu_of[t]
    c = m.vctx[v]
    H.syscall_enter(m, s, k, t)
    s[m.pc[t]] = m.L_SYS
    if _pending(m, s, v) and m.hc.one_reg_serves_reset:
        s[m.reset_pending[v]] = 0
        reset_image(m, s, v)            # the vCPU is not loaded: no put/load needed
    ver = s[m.ver[c]] + 1
    s[m.ver[c]] = ver
    x = (ver << OWNER_BITS) | c
    if m.vcpu_sve[v]:
        s[m.mem_zlo[c]] = x             # KVM_REG_ARM64_SVE_ZREG: all of Z[n]
        s[m.mem_hi[c]] = x
        s[m.want_hi[c]] = x
    else:
        s[m.mem_lo[c]] = x              # KVM_REG_ARM_CORE fp_regs.vregs[n]
        s[m.want_hi[c]] = ZERO
    s[m.want_lo[c]] = x
    s[m.permit[c]] = 0
    m.ctr[C.ONE_REG_WRITES] += 1


def _get_check(m, s) -> None:
    """KVM_GET_ONE_REG, whenever user space could call it, returns the latest values."""
    for v in range(m.nvcpu):
        t = m.vthread[v]
        if not _outside_run(m, s, t):
            continue
        c = m.vctx[v]
        lo, hi = m.image(s, c)
        want_lo, want_hi = s[m.want_lo[c]], s[m.want_hi[c]]
        if _pending(m, s, v):
            if m.hc.one_reg_serves_reset:
                continue                 # GET resets first: it returns the reset values
            want_lo = want_hi = ZERO
            why = " although a PSCI CPU_ON reset is pending (the vCPU will run from zeroes)"
        else:
            why = ""
        sve = m.vcpu_sve[v]
        bad = None
        if lo != want_lo:
            bad = ("V0-V31", lo, want_lo)
        elif sve and hi != want_hi:
            bad = ("the Z upper bits/P/FFR", hi, want_hi)
        elif m.has_fpmr:
            want_fpmr = ZERO if why else s[m.want_fpmr[c]]
            if s[m.mem_fpmr[c]] != want_fpmr:
                bad = ("FPMR", s[m.mem_fpmr[c]], want_fpmr)
        if bad is not None:
            reg, got, want = bad
            m.violate("integrity", f"KVM_GET_ONE_REG of {m.name(c)}'s {reg} (not loaded) "
                      f"returns {m.tagname(got)} from its saved image{why}, not its latest "
                      f"{m.tagname(want)}", -1, (c,))
            return


register(Feature(
    name="one-reg",
    actions={SET_ONE_REG: ActionSpec(
        "kvm-set-one-reg", _set_one_reg, lambda m, s, a:
        f"{m.tname(s[m.cur[a[1]]])}: ioctl(KVM_SET_ONE_REG) of an FP/SVE register of "
        f"{m.name(m.vctx[m.vcpu_of[s[m.cur[a[1]]]]])}", budget="one-reg")},
    enabled=_set_enabled,
    check_state=_get_check,
))
