"""The host kernel's FP/SIMD machinery (the arm64 ``fpsimd.c`` of each era).

Every KVM design in kvmctx sits on top of this: policies call these helpers
the way ``arch/arm64/kvm/fpsimd.c`` calls into ``arch/arm64/kernel/fpsimd.c``.
The era differences that matter to the designs are flags on ``HostConfig``;
a policy picks one of the named configurations below.

The two facts everything rests on (fpsimd.c states them the same way):

* ``TIF_FOREIGN_FPSTATE`` clear on ``current`` means "the CPU registers hold
  the state that the per-CPU binding (``fpsimd_last_state``) names, and it is
  newer than memory": a save writes it there, nobody may clobber it unsaved.
* A task may skip reloading its state only when *both* the per-CPU binding
  names its state and its ``fpsimd_cpu`` names this CPU.

Functions take the model ``m``, the flat state ``s`` and a CPU ``k``; they
mutate ``s`` in place and bump ``m.ctr``. Violations go to ``m.violate``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kvmctx.model import counters as C
from kvmctx.model.values import (
    FP_STATE_FPSIMD,
    FP_STATE_SVE,
    NO_CPU,
    NONE,
    TO_SAVE_CURRENT,
    TO_SAVE_FPSIMD,
    TO_SAVE_SVE,
    ZERO,
)

SYSCALL_DISCARD = "discard"  # <= v6.1: clear TIF_SVE, trap the next SVE use
SYSCALL_FLUSH = "flush"      # v6.2..v6.15: zero live upper bits, discard lazily at save
SYSCALL_KEEP = "keep"        # seed 003 as posted: keep SVE state, discard lazily at save


@dataclass(frozen=True)
class HostConfig:
    """Which host kernel the KVM design runs on."""

    era: str
    # v6.2 (seed 003): thread.fp_type records what is saved; loads follow it.
    fp_type_tracking: bool
    # v6.2 (seed 003): the binding carries to_save/sve_state/vl of *the bound
    # state*; before, the SVE save went to current's buffer at current's VL.
    bound_state_format: bool
    # v4.18 (Martin's series): fpsimd_save() writes the FPSIMD image the CPU
    # binding names (fpsimd_last_state.st); v4.17's task_fpsimd_save() wrote
    # current's own thread struct whatever the binding said.
    save_to_bound: bool
    # v6.8: kernel-mode NEON in task context is preemptible (TIF_KERNEL_FPSTATE)
    kernel_neon_preemptible: bool
    syscall_sve: str
    # d8ad71fa38a9 (v4.18): fpsimd_flush_cpu_state() sets TIF_FOREIGN_FPSTATE
    flush_cpu_sets_foreign: bool
    # efbc20249fee (v4.18): fpsimd_flush_task_state() sets TIF_FOREIGN_FPSTATE
    flush_task_sets_foreign: bool
    # kernel_neon_begin() leaves current's TIF_FOREIGN_FPSTATE set (by hand in
    # v4.x, through fpsimd_flush_cpu_state() later): the user state must reload.
    kernel_neon_sets_foreign: bool = True
    # 7c68a9cc0402 / 32365e64a20e: CPU PM and hotplug invalidate the binding
    pm_invalidates: bool = True
    hotplug_invalidates: bool = True
    # 674c242c9323: execve invalidates the task's binding (not just its data)
    exec_flushes_task: bool = True
    # 9de52a755cfb: sigreturn copies the FPSIMD record into the task image
    sigreturn_copies_fpsimd: bool = True
    # 61da7c8e2a60 (v6.8): the signal frame's SVE payload (and the FPSIMD record's
    # source) follows fp_type, not TIF_SVE (feature sig-frames).
    signal_frame_from_fp_type: bool = True
    # 01098d893fa8: switching to a task inside a kernel-mode NEON section
    # flushes the CPU state (SMSTOP) *before* loading its kernel FPSIMD state;
    # before it, the SMSTOP came after the load and zeroed it (catalogue 15).
    kernel_state_flush_first: bool = True
    # e761a927bc9a (v5.0): kvm_reset_vcpu() puts a loaded vCPU (preemption off)
    # before it resets the image, and loads it again after; before it, the image
    # was reset under a loaded vCPU whose state could be live (feature vcpu-reset).
    reset_puts_vcpu: bool = True
    # 6826c6849b46 (v5.15): KVM_{GET,SET}_ONE_REG serve a pending KVM_REQ_VCPU_RESET
    # before they touch the registers (feature one-reg).
    one_reg_serves_reset: bool = True
    # e5fa85fce08b: task_fpsimd_load() writes FPMR after SVCR (a PSTATE.SM change
    # zeroes FPMR); before it, FPMR came first (feature fpmr).
    fpmr_after_svcr: bool = True
    # a90878f297d3: execve (fpsimd_flush_thread) resets FPMR (feature fpmr).
    exec_resets_fpmr: bool = True
    # 128a7494a9f1: an NT_ARM_SVE write sets TIF_SVE on every SVE system; before it
    # (from 9f8bf718f292) only when the system supports SME (feature ptrace).
    ptrace_sve_sets_tif_sve: bool = True
    # 5cbb61bf4168: sve_set_common() zeroes the tracee's fpsimd_state; before it (from
    # 316283f276eb) the memset hit current's, the tracer's saved V0-V31 (feature ptrace).
    sve_set_zeroes_target: bool = True
    # 751ecf6afd65 (v6.12, CVE-2024-50275): do_sve_acc() with the state in memory
    # invalidates the task's binding after converting its image; before it, a CPU
    # that still held the pre-trap state could be reused without a reload.
    sve_trap_flushes_task: bool = True
    # d3eaab3c7090 (v6.15, in 6.14.y): the same for do_sme_acc().
    sme_trap_flushes_task: bool = True
    # 398edaa12f9c (v6.16, in 6.14.y/6.12.y): whether a save may drop the SVE state is
    # recorded in the binding (to_save = FPSIMD at syscall entry after the flush,
    # CURRENT again at syscall exit; any rebind resets it), not read from
    # in_syscall(): a ptrace write of SVE state at a syscall stop is kept. Only
    # meaningful with syscall_sve == "flush".
    syscall_discard_by_to_save: bool = False
    # 2632e2521769 (v6.8, reapplied as f481bb32d60e): saving a task's kernel-mode
    # NEON state at a switch binds that buffer to the CPU and records the CPU
    # (thread.kernel_fpsimd_cpu: the kernel context's ctx.fpsimd_cpu here); switching
    # back skips the load while both still match. With kernel_state_flush_first the
    # flush comes first and empties the binding, so the elision never applies.
    kernel_state_lazy: bool = True
    # e92bee9f861b (v6.10, in 6.8.y/6.9.y): switching to a task inside kernel-mode
    # NEON flushes the CPU state, so the previous task's user binding no longer
    # claims registers its kernel state overwrote; before it, only next's
    # TIF_FOREIGN_FPSTATE was set (the dm-crypt corruption on Apple M1).
    kernel_switch_flushes: bool = True
    # 375110ab51de (v6.5): the VHE hyp exit leaves host SME access enabled (CPTR_EL2.SMEN
    # = EL1EN); before it SMEN was 0b00 until kvm_arch_vcpu_put_fp() re-enabled it, so a
    # softirq's kernel-mode NEON in between trapped (feature isb; 407a99c4654e's message).
    hyp_exit_enables_host_sme: bool = True
    # 59d78a2ec0e9 (v6.2): isb() after kvm_arch_vcpu_put_fp()'s SMEN write, before the
    # save reads SVCR (feature isb; the write itself is gone from v6.14, 407a99c4654e).
    put_syncs_smen: bool = True
    # 5d0a8d2fba50 (v6.5): an NT_ARM_SSVE write sets TIF_SME (and SME storage); before it
    # the task resumed in streaming mode with SME trapped and its SVL never programmed
    # (feature sme-regsets).
    ssve_write_sets_tif_sme: bool = True
    # 2f43f549cd0b (v6.5): an NT_ARM_ZT write sets TIF_SME; before it the task's first SME
    # access trapped and do_sme_acc()'s sme_alloc(flush) wiped the written ZT0/ZA.
    zt_write_sets_tif_sme: bool = True

    # Signal frames (feature sig-frames), the 2025-2026 signal rework:
    # c94f2f326146 (v6.16): sigreturn merges the FPSIMD record into an SVE payload
    # when the restored fp_type is SVE; before it, only when TIF_SVE was set.
    sigreturn_merge_by_fp_type: bool = True
    # 99560c9452bb (v6.16): setup_return() applies SMSTOP to the task's saved state
    # under the FP context; before it, sme_smstop() hit whatever registers were live.
    signal_smstop_saved_state: bool = True
    # 929fa99b1215 (v6.16): delivery saves and flushes the task's state before the
    # frame is written, and the FPMR record is thread.uw.fpmr; before it, the state
    # stayed live and bound and preserve_fpmr_context() read the live FPMR.
    signal_save_flush_early: bool = True
    # d2907cbe9ea0 (v6.19, CVE-2026-23102): an SVE record with SVE_SIG_FLAG_SM sets
    # TIF_SME (SME storage allocated); one without it clears SVCR.SM.
    sigreturn_sm_sets_tif_sme: bool = True
    # ea8ccfddbce0 (v6.19, CVE-2026-23107): a ZA record allocates the SVE storage
    # streaming mode needs before TIF_SME is set.
    sigreturn_za_allocates_sve: bool = True

    # 49ce484187f7 (v6.16): a VL change (prctl PR_SVE/SME_SET_VL, ptrace) keeps the
    # effective FPSIMD state (fpsimd_sync_from_effective_state: follows fp_type); before
    # it, sve_to_fpsimd() ran whenever TIF_SVE was set and copied a stale SVE image
    # over an FPSIMD-form save (feature vl).
    vl_change_syncs_effective: bool = True
    # 071b6d4a5d34 (v4.15): copy_thread() invalidates the child's fpsimd_cpu; before it
    # the child inherited the parent's and, given a dead task's task_struct, matched a
    # CPU binding that still named the dead task (feature fork).
    clone_flushes_task: bool = True
    # e0cb0f26594c (v6.16): arch_dup_task_struct() saves and flushes the parent's state
    # and copies the effective FPSIMD state (the SVE image's low bits when fp_type is
    # SVE); before it, the child got thread.uw.fpsimd_state, stale after a ptrace
    # NT_ARM_SVE write at a syscall stop (feature fork).
    clone_syncs_effective: bool = True
    # a6d066f70574 (v6.16): arch_dup_task_struct() applies task_smstop_sm() to the child
    # (PSTATE.SM clear, V0-V31 zeroed, as the SME ABI documents for clone()); before it
    # the child inherited thread.svcr.SM with fp_type FPSIMD, no sve_state and (ZA off)
    # TIF_SME clear (feature fork).
    clone_clears_sm: bool = True
    # b87c8c4aca11 (v6.16): a VL change keeps fp_type, TIF_SVE and PSTATE.SM and refills
    # the new SVE image (fpsimd_sync_to_effective_state_zeropad); before it the task was
    # converted to FPSIMD form (fp_type FPSIMD, TIF_SVE clear) with PSTATE.SM left set by
    # an SVE VL change, SM/ZA/TIF_SME cleared by an SME one (feature vl).
    vl_change_keeps_mode: bool = True

    # Seed 000 patch 0.9 (RFC, 2018), as posted: fpsimd_thread_switch() asks
    # whether *current's* state is foreign instead of next's.
    switch_tests_prev: bool = False
    # Seed 000 patch 0.9: WARN_ON() in __fpsimd_bind_to_cpu(): "" (none), "||" as
    # posted (!in_softirq() || !irqs_disabled()), "&&" as meant.
    bind_warn: str = ""
    # Seed 000 patch 0.9: binding a state records the CPU in the state itself
    # (st->cpu = smp_processor_id()), for vCPU states too.
    bind_sets_state_cpu: bool = False
    # arm32 (arch/arm/vfp, 2012): lazy VFP by FPEXC.EN. A context switch saves the
    # owner's state if VFP was enabled and disables it; a task's first VFP
    # instruction traps (vfp_support_entry) and loads its state unless it is
    # still the one in the hardware. No TIF_FOREIGN_FPSTATE, no reload at ret_to_user.
    arm32_lazy_vfp: bool = False

    def but(self, **kw: object) -> HostConfig:
        return replace(self, **kw)  # type: ignore[arg-type]


HOST_4_17 = HostConfig(
    era="v4.17", fp_type_tracking=False, bound_state_format=False, save_to_bound=False,
    kernel_neon_preemptible=False, syscall_sve=SYSCALL_DISCARD,
    flush_cpu_sets_foreign=False, flush_task_sets_foreign=False,
    signal_frame_from_fp_type=False,
)
HOST_4_18 = HOST_4_17.but(era="v4.18", flush_cpu_sets_foreign=True,
                          flush_task_sets_foreign=True, save_to_bound=True)
HOST_6_1 = HOST_4_18.but(era="v6.1")
HOST_SEED_003 = HOST_4_18.but(era="seed 003 (2022)", fp_type_tracking=True,
                              bound_state_format=True, syscall_sve=SYSCALL_KEEP,
                              signal_frame_from_fp_type=True)
HOST_6_2 = HOST_SEED_003.but(era="v6.2", syscall_sve=SYSCALL_FLUSH)
HOST_6_14 = HOST_6_2.but(era="v6.14", kernel_neon_preemptible=True,
                         syscall_discard_by_to_save=True)


def fpsimd_bytes(m: object, c: int) -> int:  # pragma: no cover - doc helper
    return 520


def task_vq(m, s: list[int], t: int) -> int:
    """Task t's SVE VL (128-bit units): per-task state with feature "vl", else config."""
    return s[m.tvq[t]] if m.has_vl else m.ctx_vq[t]


def task_svq(m, s: list[int], t: int) -> int:
    """Task t's streaming VL (128-bit units), as task_vq."""
    return s[m.tsvq[t]] if m.has_vl else m.task_svq[t]


def _save_bytes(m, c: int, sve: bool) -> int:
    return m.sve_bytes[c] if sve else m.fpsimd_bytes[c]


# --------------------------------------------------------------------------
# Save and load


def fpsimd_save_user_state(m, s: list[int], k: int) -> None:
    """Save the live registers into the state the CPU binding names.

    Nothing to do when current's TIF_FOREIGN_FPSTATE is set: the registers
    are not anybody's unsaved state then (the invariant this flag encodes).
    """
    cur = s[m.cur[k]]
    if s[m.foreign[cur]]:
        return
    c = s[m.bound[k]] if m.hc.save_to_bound else cur
    if c == NONE:
        m.violate("no-bug", "fpsimd_save_user_state(): TIF_FOREIGN_FPSTATE is clear but the "
                  "CPU binding is empty (NULL dereference)", k, (cur,))
        return
    if m.has_isb and m.has_sme:
        _host_sme_access(m, s, k, "fpsimd_save_user_state(): read_sysreg_s(SYS_SVCR)")
    if m.has_fpmr:
        s[m.mem_fpmr[c]] = s[m.fpmr[k]]   # *(last->fpmr) = read_sysreg_s(SYS_FPMR)
    hc = m.hc
    if hc.bound_state_format:
        ts = s[m.to_save[k]]
        save_sve = ts == TO_SAVE_SVE or (
            ts == TO_SAVE_CURRENT and s[m.tif_sve[cur]]
            and (hc.syscall_discard_by_to_save
                 or not (s[m.insys[cur]] and hc.syscall_sve != SYSCALL_DISCARD)))
        want_vl = s[m.bound_vl[k]]
        target = c
    else:
        # v4.x: the format comes from current's TIF_SVE and the SVE image is
        # current's own sve_state, whatever the binding says (2955bcc8c309).
        save_sve = bool(s[m.tif_sve[cur]]) and m.has_sve
        want_vl = task_vq(m, s, cur)
        target = cur if save_sve else c
    live_vl = s[m.vl[k]]
    streaming = False
    if m.has_sme and c < m.nthreads:
        # A task's state: thread.svcr and ZA are saved with it; in streaming mode
        # the Z/P registers are saved in SVE form at the streaming VL.
        streaming = bool(s[m.sm[k]])
        s[m.svcr_sm[c]] = s[m.sm[k]]
        s[m.svcr_za[c]] = s[m.za_on[k]]
        if s[m.za_on[k]]:
            s[m.mem_za[c]] = s[m.za[k]]
            m.ctr[C.SAVES] += 1
            m.ctr[C.ZA_SAVES] += 1
            m.ctr[C.BYTES_SAVED] += m.za_bytes[c]
        if streaming:
            save_sve, want_vl, live_vl, target = True, task_svq(m, s, c), s[m.svl[k]], c
    if save_sve:
        if live_vl != want_vl:
            m.violate("no-bug", f"fpsimd_save_user_state(): live VL {128 * live_vl} != "
                      f"expected VL {128 * want_vl}: WARN, SIGKILL to {m.name(cur)} and its "
                      "state is not saved", k, (cur, c))
            return
        s[m.mem_zlo[target]] = s[m.lo[k]]
        s[m.mem_hi[target]] = s[m.hi[k]]
        s[m.fp_type[target]] = FP_STATE_SVE
        ctr = m.ctr
        ctr[C.SAVES] += 1
        ctr[C.SVE_SAVES] += 1
        ctr[C.BYTES_SAVED] += m.ssve_bytes[target] if streaming else m.sve_bytes[target]
    else:
        s[m.mem_lo[c]] = s[m.lo[k]]
        s[m.fp_type[c]] = FP_STATE_FPSIMD
        ctr = m.ctr
        ctr[C.SAVES] += 1
        ctr[C.BYTES_SAVED] += m.fpsimd_bytes[c]


def fpsimd_flush_cpu_state(m, s: list[int], k: int) -> None:
    """Forget what the registers hold: nobody may trust them now."""
    s[m.bound[k]] = NONE
    # The binding's other fields are dead while it is empty; normalise them so
    # equal situations are equal states.
    s[m.to_save[k]] = TO_SAVE_CURRENT
    s[m.bound_vl[k]] = 1
    if m.hc.flush_cpu_sets_foreign:
        s[m.foreign[s[m.cur[k]]]] = 1
    if m.has_sme:
        if m.has_isb:
            _host_sme_access(m, s, k, "fpsimd_flush_cpu_state(): sme_smstop()")
        sme_smstop(m, s, k)


def _host_sme_access(m, s: list[int], k: int, what: str) -> None:
    from kvmctx.model.feat.isb import host_sme_access
    host_sme_access(m, s, k, what)


def fpsimd_save_and_flush_cpu_state(m, s: list[int], k: int) -> None:
    fpsimd_save_user_state(m, s, k)
    fpsimd_flush_cpu_state(m, s, k)


def fpsimd_flush_task_state(m, s: list[int], t: int) -> None:
    """Invalidate every CPU's claim to hold t's state (forces a reload)."""
    s[m.fcpu[t]] = NO_CPU
    if m.hc.flush_task_sets_foreign:
        s[m.foreign[t]] = 1


def load_state(m, s: list[int], k: int, c: int, sve: bool, vl: int) -> None:
    """Load context c's saved image into CPU k's registers."""
    ctr = m.ctr
    if sve:
        s[m.vl[k]] = vl
        s[m.lo[k]] = s[m.mem_zlo[c]]
        s[m.hi[k]] = s[m.mem_hi[c]]
        ctr[C.SVE_RESTORES] += 1
        ctr[C.BYTES_RESTORED] += m.sve_bytes[c]
    else:
        # Writing V[n] with FPSIMD loads zeroes the upper Z bits.
        s[m.lo[k]] = s[m.mem_lo[c]]
        s[m.hi[k]] = ZERO
        ctr[C.BYTES_RESTORED] += m.fpsimd_bytes[c]
    ctr[C.RESTORES] += 1


def task_fpsimd_load(m, s: list[int], k: int, t: int) -> None:
    if m.has_fpmr and not m.hc.fpmr_after_svcr:
        s[m.fpmr[k]] = s[m.mem_fpmr[t]]   # before e5fa85fce08b: FPMR first, then SVCR
    _task_fpsimd_load(m, s, k, t)
    if m.has_fpmr and m.hc.fpmr_after_svcr:
        s[m.fpmr[k]] = s[m.mem_fpmr[t]]   # e5fa85fce08b: FPMR after SVCR


def _task_fpsimd_load(m, s: list[int], k: int, t: int) -> None:
    if m.hc.fp_type_tracking:
        streaming = m.has_sme and s[m.svcr_sm[t]]
        if s[m.fp_type[t]] == FP_STATE_SVE:
            if not s[m.tif_sve[t]] and not streaming:
                m.violate("no-bug", f"task_fpsimd_load(): {m.name(t)} has an SVE image but "
                          "TIF_SVE is clear (WARN_ON_ONCE)", k, (t,))
                s[m.tif_sve[t]] = 1
            if m.has_sme:
                sme_load(m, s, k, t)
            if streaming:
                # Streaming Z/P at the streaming VL; ZCR (non-streaming VL) set if TIF_SVE.
                if s[m.tif_sve[t]]:
                    s[m.vl[k]] = task_vq(m, s, t)
                s[m.lo[k]] = s[m.mem_zlo[t]]
                s[m.hi[k]] = s[m.mem_hi[t]]
                m.ctr[C.RESTORES] += 1
                m.ctr[C.SVE_RESTORES] += 1
                m.ctr[C.BYTES_RESTORED] += m.ssve_bytes[t]
            else:
                load_state(m, s, k, t, True, task_vq(m, s, t))
        else:
            # Stop tracking SVE for this task until its next SVE use.
            s[m.tif_sve[t]] = 0
            was_sm = m.has_sme and s[m.sm[k]]
            old_hi = s[m.hi[k]]
            if m.has_sme:
                sme_load(m, s, k, t)
            load_state(m, s, k, t, False, 0)
            if was_sm and s[m.sm[k]]:
                # fp_type FPSIMD with thread.svcr.SM set (only a kernel without
                # b87c8c4aca11 or a6d066f70574 makes it) on a CPU already in streaming
                # mode: the SVCR write changes nothing, so nothing is zeroed; the FPSIMD
                # load clears the Z bits above 128 but P and FFR keep the previous
                # streaming owner's values (the "hi" bank holds all three).
                s[m.hi[k]] = old_hi
    else:
        load_state(m, s, k, t, bool(s[m.tif_sve[t]]), task_vq(m, s, t))


def _bind_warn(m, k: int, c: int) -> None:
    """Seed 000 patch 0.9's WARN_ON() in __fpsimd_bind_to_cpu(). Every caller binds
    with bottom halves disabled (in_softirq() true) and IRQs as the step has them."""
    in_softirq = True
    irqs_off = bool(m.irqs_off)
    cond = m.hc.bind_warn
    fires = ((not in_softirq) or (not irqs_off)) if cond == "||" else (
        (not in_softirq) and (not irqs_off))
    if fires:
        m.violate("no-bug", f"__fpsimd_bind_to_cpu(): WARN_ON(!in_softirq() {cond} "
                  f"!irqs_disabled()) fires binding {m.name(c)} (in_softirq=1, "
                  f"irqs_disabled={int(irqs_off)})", k, (c,))


def fpsimd_bind_task_to_cpu(m, s: list[int], k: int, t: int) -> None:
    if m.hc.bind_warn:
        _bind_warn(m, k, t)
    s[m.bound[k]] = t
    s[m.to_save[k]] = TO_SAVE_CURRENT
    s[m.bound_vl[k]] = task_vq(m, s, t)
    s[m.fcpu[t]] = k
    # EL0 SVE access follows TIF_SVE (sve_user_enable/disable).
    zen = 1 if s[m.tif_sve[t]] else 0
    if s[m.zen[k]] != zen:
        s[m.zen[k]] = zen
        m.ctr[C.TRAP_WRITES] += 1
    if m.has_sme:
        # EL0 SME access follows TIF_SME (sme_user_enable/disable).
        smen = 1 if s[m.tif_sme[t]] else 0
        if s[m.smen[k]] != smen:
            s[m.smen[k]] = smen
            m.ctr[C.TRAP_WRITES] += 1


def fpsimd_bind_state_to_cpu(m, s: list[int], k: int, c: int, to_save: int, vl: int) -> None:
    """Bind a non-task state (a vCPU's) to this CPU's registers (KVM uses it)."""
    if m.hc.bind_warn:
        _bind_warn(m, k, c)
    if m.hc.bind_sets_state_cpu:
        s[m.fcpu[c]] = k
    s[m.bound[k]] = c
    s[m.to_save[k]] = to_save
    s[m.bound_vl[k]] = vl


def fpsimd_restore_current_state(m, s: list[int], k: int, t: int) -> None:
    """On return to user: reload current's state if the registers are foreign."""
    if m.hc.arm32_lazy_vfp:
        return  # arm32 reloads lazily, at the first VFP instruction (vfp_support_entry)
    if s[m.foreign[t]]:
        task_fpsimd_load(m, s, k, t)
        fpsimd_bind_task_to_cpu(m, s, k, t)
        s[m.foreign[t]] = 0


def fpsimd_thread_switch(m, s: list[int], k: int, prev: int, nxt: int) -> None:
    """Context switch on CPU k: save prev, decide whether next must reload."""
    if m.hc.arm32_lazy_vfp:
        vfp_notifier_switch(m, s, k)
        return
    hc = m.hc
    if hc.kernel_neon_preemptible and s[m.kfp[prev]]:
        # prev is inside a kernel-mode NEON section: fpsimd_save_kernel_state().
        fpsimd_save_kernel_state(m, s, k, prev)
    else:
        fpsimd_save_user_state(m, s, k)
    if hc.kernel_neon_preemptible and s[m.kfp[nxt]]:
        if hc.kernel_state_flush_first:
            fpsimd_flush_cpu_state(m, s, k)
        kc = m.kn_ctx[nxt]
        if not (hc.kernel_state_lazy and s[m.bound[k]] == kc and s[m.fcpu[kc]] == k):
            # fpsimd_load_kernel_state(), unless this CPU still holds it (2632e2521769).
            s[m.lo[k]] = s[m.mem_lo[kc]]
            s[m.hi[k]] = ZERO
            m.ctr[C.RESTORES] += 1
            m.ctr[C.BYTES_RESTORED] += 520
        if not hc.kernel_state_flush_first and hc.kernel_switch_flushes:
            fpsimd_flush_cpu_state(m, s, k)   # SMSTOP after the load (before 01098d893fa8)
        s[m.foreign[nxt]] = 1
    elif nxt:
        # Whose state must be bound here for next to skip its reload: next's own,
        # or (seed 000 patch 0.9 as posted) prev's.
        who = prev if m.hc.switch_tests_prev else nxt
        wrong_task = s[m.bound[k]] != who or not who
        wrong_cpu = s[m.fcpu[who]] != k
        s[m.foreign[nxt]] = 1 if (wrong_task or wrong_cpu) else 0


# --------------------------------------------------------------------------
# Kernel-mode NEON


def fpsimd_save_kernel_state(m, s: list[int], k: int, t: int) -> None:
    """Save t's kernel-mode NEON registers; from 2632e2521769 also bind that buffer
    to the CPU (to_save FPSIMD) and record the CPU in it."""
    kc = m.kn_ctx[t]
    s[m.mem_lo[kc]] = s[m.lo[k]]
    m.ctr[C.SAVES] += 1
    m.ctr[C.BYTES_SAVED] += 520
    if m.hc.kernel_state_lazy:
        s[m.bound[k]] = kc
        s[m.to_save[k]] = TO_SAVE_FPSIMD
        s[m.bound_vl[k]] = 1
        s[m.fcpu[kc]] = k


def kernel_neon_begin(m, s: list[int], k: int, softirq: bool) -> None:
    cur = s[m.cur[k]]
    if m.hc.kernel_neon_preemptible and s[m.kfp[cur]]:
        # Only a softirq can nest inside a task's kernel-mode NEON section.
        if not softirq:
            m.violate("no-bug", "kernel_neon_begin(): nested task-context NEON (BUG_ON)", k, (cur,))
        fpsimd_save_kernel_state(m, s, k, cur)   # then unbound by the flush below
    else:
        fpsimd_save_user_state(m, s, k)
        if m.hc.kernel_neon_preemptible and not softirq and cur:
            s[m.kfp[cur]] = 1
    fpsimd_flush_cpu_state(m, s, k)
    if m.hc.kernel_neon_sets_foreign and cur:
        s[m.foreign[cur]] = 1
    m.ctr[C.SOFTIRQ_NEON if softirq else C.TASK_NEON] += 1


def kernel_neon_end(m, s: list[int], k: int, softirq: bool) -> None:
    cur = s[m.cur[k]]
    if not m.hc.kernel_neon_preemptible:
        return
    if softirq:
        if s[m.kfp[cur]]:
            # Give the interrupted task-context NEON user its registers back.
            s[m.lo[k]] = s[m.mem_lo[m.kn_ctx[cur]]]
            s[m.hi[k]] = ZERO
            m.ctr[C.RESTORES] += 1
            m.ctr[C.BYTES_RESTORED] += 520
    else:
        s[m.kfp[cur]] = 0


# --------------------------------------------------------------------------
# SVE and SME


def do_sve_acc(m, s: list[int], k: int, t: int) -> None:
    """EL0 SVE access trap: start tracking SVE for t with zeroed upper bits."""
    m.ctr[C.HOST_SVE_TRAPS] += 1
    if s[m.tif_sve[t]]:
        m.violate("no-bug", f"do_sve_acc(): SVE access by {m.name(t)} trapped although "
                  "TIF_SVE is set (WARN: \"SVE access shouldn't have trapped\")", k, (t,))
    s[m.tif_sve[t]] = 1
    _sve_alloc(m, s, t)
    if not s[m.foreign[t]]:
        # Live: zero the upper bits in the registers and rebind (enables EL0 SVE).
        s[m.vl[k]] = task_vq(m, s, t)
        s[m.hi[k]] = ZERO
        fpsimd_bind_task_to_cpu(m, s, k, t)
    else:
        # In memory: convert the FPSIMD image to SVE form.
        m.ctr[C.SVE_TRAPS_IN_MEMORY] += 1
        s[m.mem_zlo[t]] = s[m.mem_lo[t]]
        s[m.mem_hi[t]] = ZERO
        s[m.fp_type[t]] = FP_STATE_SVE
        if m.hc.sve_trap_flushes_task:
            fpsimd_flush_task_state(m, s, t)
    s[m.want_hi[t]] = ZERO
    s[m.permit[t]] = 0


def _sve_alloc(m, s: list[int], t: int) -> None:
    """sve_alloc(): thread.sve_state exists from here (tracked with sig-frames and sme,
    where a ZA record restored without it is ea8ccfddbce0's crash)."""
    store = getattr(m, "sve_store", None)
    if store is not None:
        s[store[t]] = 1


def sme_smstop(m, s: list[int], k: int) -> None:
    """SMSTOP: leaving streaming mode architecturally zeroes Z/P/FFR and resets
    FPSR; turning ZA off makes its contents unrecoverable (zero at the next SMSTART)."""
    if s[m.sm[k]]:
        s[m.sm[k]] = 0
        s[m.lo[k]] = ZERO
        s[m.hi[k]] = ZERO
        if m.has_fpmr:
            s[m.fpmr[k]] = ZERO   # a PSTATE.SM change zeroes FPMR
    s[m.za_on[k]] = 0
    s[m.za[k]] = ZERO


def sme_load(m, s: list[int], k: int, t: int) -> None:
    """task_fpsimd_load()'s SME part: streaming VL, SVCR from thread.svcr, then ZA."""
    if s[m.tif_sme[t]]:
        s[m.svl[k]] = task_svq(m, s, t)       # sme_set_vq()
    if m.has_fpmr and s[m.sm[k]] != s[m.svcr_sm[t]]:
        s[m.fpmr[k]] = ZERO                   # the SM change zeroes FPMR
    s[m.sm[k]] = s[m.svcr_sm[t]]              # write_sysreg_s(thread.svcr, SYS_SVCR)
    s[m.za_on[k]] = s[m.svcr_za[t]]
    if s[m.za_on[k]]:
        s[m.za[k]] = s[m.mem_za[t]]           # sme_load_state()
        m.ctr[C.RESTORES] += 1
        m.ctr[C.ZA_RESTORES] += 1
        m.ctr[C.BYTES_RESTORED] += m.za_bytes[t]
    else:
        s[m.za[k]] = ZERO


def do_sme_acc(m, s: list[int], k: int, t: int) -> None:
    """EL0 SME access trap: TIF_SME on; program the streaming VL and rebind if live."""
    m.ctr[C.HOST_SME_TRAPS] += 1
    if s[m.tif_sme[t]]:
        m.violate("no-bug", f"do_sme_acc(): SME access by {m.name(t)} trapped although "
                  "TIF_SME is set (WARN_ON)", k, (t,))
    s[m.tif_sme[t]] = 1
    _sve_alloc(m, s, t)   # sve_alloc() then sme_alloc(): streaming mode needs both
    if not s[m.foreign[t]]:
        s[m.svl[k]] = task_svq(m, s, t)
        fpsimd_bind_task_to_cpu(m, s, k, t)   # enables EL0 SME
    else:
        m.ctr[C.SME_TRAPS_IN_MEMORY] += 1
        if m.hc.sme_trap_flushes_task:
            fpsimd_flush_task_state(m, s, t)
    # sme_alloc(current, true) ran first: the saved ZA/ZT0 image is zeroed (it only ever
    # held something with TIF_SME clear after a ptrace write, 2f43f549cd0b).
    s[m.mem_za[t]] = ZERO


# --------------------------------------------------------------------------
# Syscalls


def syscall_enter(m, s: list[int], k: int, t: int) -> None:
    """el0_svc: the syscall ABI lets the kernel discard SVE state beyond V0-V31."""
    m.ctr[C.SYSCALLS] += 1
    if m.has_sme and s[m.sm[k]]:
        # fp_user_discard(): sme_smstop_sm(). A syscall leaves streaming mode (the
        # SME ABI); Z/P are zeroed, ZA stays. The task's Z/P values are now zero.
        s[m.sm[k]] = 0
        s[m.lo[k]] = ZERO
        s[m.hi[k]] = ZERO
        s[m.want_lo[t]] = ZERO
        s[m.want_hi[t]] = ZERO
        s[m.want_sm[t]] = 0
        if m.has_fpmr:
            s[m.fpmr[k]] = ZERO   # ... and FPMR (the SM change)
            s[m.want_fpmr[t]] = ZERO
    if s[m.tif_sve[t]]:
        mode = m.hc.syscall_sve
        # The ABI lets the kernel zero the upper bits from here on (moot if zero).
        s[m.permit[t]] = 1 if s[m.want_hi[t]] != ZERO else 0
        if mode == SYSCALL_DISCARD:
            # sve_user_discard(): stop tracking SVE, trap the next use.
            s[m.tif_sve[t]] = 0
            if s[m.zen[k]]:
                s[m.zen[k]] = 0
                m.ctr[C.TRAP_WRITES] += 1
        elif mode == SYSCALL_FLUSH:
            s[m.hi[k]] = ZERO  # sve_flush_live(): the state is live at entry
            if m.hc.syscall_discard_by_to_save:
                # fpsimd_syscall_enter(): only the FPSIMD part is live now. (Linux
                # writes it whatever TIF_SVE says; without TIF_SVE a save takes the
                # FPSIMD form anyway, so the model writes it only with TIF_SVE.)
                s[m.to_save[k]] = TO_SAVE_FPSIMD
    s[m.insys[t]] = 1


def syscall_exit(m, s: list[int], k: int, t: int) -> None:
    """The syscall is over (for the save rule of v6.14: in_syscall() false)."""
    s[m.insys[t]] = 0


def fpsimd_syscall_exit(m, s: list[int], k: int, t: int) -> None:
    """398edaa12f9c: after exit_to_user_mode() the task's state is bound here; stop
    the lazy discard (IRQs masked, just before the eret)."""
    if m.hc.syscall_discard_by_to_save and m.hc.syscall_sve == SYSCALL_FLUSH:
        s[m.to_save[k]] = TO_SAVE_CURRENT


# Save-target shorthand used by policies that stash FPSIMD state themselves.
def save_fpsimd_to(m, s: list[int], k: int, slot: int, c: int) -> None:
    """Save the live FPSIMD view into ``slot`` (c's image, or a stash slot)."""
    s[slot] = s[m.lo[k]]
    if slot == m.mem_lo[c]:
        s[m.fp_type[c]] = FP_STATE_FPSIMD  # (a ghost before v6.2: the form last written)
    m.ctr[C.SAVES] += 1
    m.ctr[C.BYTES_SAVED] += m.fpsimd_bytes[c]


def restore_fpsimd_from(m, s: list[int], k: int, slot: int, c: int) -> None:
    s[m.lo[k]] = s[slot]
    s[m.hi[k]] = ZERO
    m.ctr[C.RESTORES] += 1
    m.ctr[C.BYTES_RESTORED] += m.fpsimd_bytes[c]


__all__ = [
    "FP_STATE_FPSIMD", "FP_STATE_SVE", "TO_SAVE_FPSIMD", "TO_SAVE_SVE", "HostConfig",
]


# --------------------------------------------------------------------------
# arm32 lazy VFP (arch/arm/vfp/vfpmodule.c, v3.x)


def vfp_notifier_switch(m, s: list[int], k: int) -> None:
    """THREAD_NOTIFY_SWITCH (SMP): if VFP is enabled, save the hardware state into
    its owner (vfp_current_hw_state[cpu]) in case the thread migrates; then
    always disable VFP so the next user traps."""
    owner = s[m.bound[k]]
    if s[m.vfp_en[k]] and owner:
        s[m.mem_lo[owner]] = s[m.lo[k]]
        m.ctr[C.SAVES] += 1
        m.ctr[C.BYTES_SAVED] += m.fpsimd_bytes[owner]
    s[m.vfp_en[k]] = 0


def vfp_support_entry(m, s: list[int], k: int, t: int) -> None:
    """The undefined-instruction trap of a VFP access with FPEXC.EN clear: load
    current's state unless it is still in the hardware, make it the owner, enable."""
    m.ctr[C.HOST_SVE_TRAPS] += 1
    if not (s[m.bound[k]] == t and s[m.fcpu[t]] == k):
        # (SMP: the previous owner was saved when it was switched out.)
        s[m.lo[k]] = s[m.mem_lo[t]]
        s[m.hi[k]] = ZERO
        m.ctr[C.RESTORES] += 1
        m.ctr[C.BYTES_RESTORED] += m.fpsimd_bytes[t]
        s[m.bound[k]] = t
        s[m.fcpu[t]] = k
    s[m.vfp_en[k]] = 1
