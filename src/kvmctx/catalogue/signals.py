"""Catalogue mutants of the signal paths (feature sig-frames): upstream-6.14 with one
fix of the 2024-2026 signal work undone (bug-catalogue.md 7-9, 11, 12; 929fa99b1215
as new entry 29). Each is found at one of the named bounds below.
"""

from __future__ import annotations

from kvmctx.catalogue.mutants import Mutant, _host, register
from kvmctx.engines.checker import Bounds, register_bounds

_SIG = frozenset({"signals", "sig-frames", "preempt"})

register_bounds(Bounds(
    "host-sig", cpus=1, fpsimd_tasks=1, sve_tasks=0, sme_tasks=1, vcpus=0,
    features=frozenset({"signals", "sig-frames", "preempt", "sme", "fpmr"}),
    budgets=(("signal", 3), ("switch", 2)),
    description="1 CPU, an FPSIMD task and an SME task (streaming SVE, ZA), both using "
                "FPMR, no vCPU; signal delivery at EL0 and at a syscall's return and "
                "rt_sigreturn with FPSIMD, streaming-SVE, ZA and FPMR records (sig-frames), "
                "frame edits and forged records in the handler, preemption in the copies"))

register_bounds(Bounds(
    "host-sig-sve", cpus=1, fpsimd_tasks=0, sve_tasks=1, sme_tasks=1, vcpus=0,
    features=frozenset({"signals", "sig-frames", "preempt", "sme", "sve"}),
    budgets=(("signal", 2), ("switch", 2)),
    description="1 CPU, an SVE task (VL256) and an SME task, no vCPU; host-sig's signal "
                "frames with non-streaming SVE as well: the SVE access trap's sve_alloc() "
                "and TIF_SVE without thread.sve_state (a NULL save)"))

register(Mutant(
    name="sigframe-by-tif-sve", base="upstream-6.14", source="61da7c8e2a60", catalogue=7,
    invariant="integrity",
    description="signal delivery builds the frame from TIF_SVE: a streaming task without "
                "TIF_SVE gets its FPSIMD record from the stale FPSIMD image (and an SVE task "
                "whose syscall saved only V0-V31 gets both records from the stale sve_state)",
    transform=_host(signal_frame_from_fp_type=False), bounds="host-sig"))
register(Mutant(
    name="sigreturn-merge-by-tif-sve", base="upstream-6.14", source="c94f2f326146",
    catalogue=8, invariant="recoverability",
    description="rt_sigreturn merges the FPSIMD record into a streaming SVE payload only "
                "when TIF_SVE is set: a handler that edits V0-V31 in a frame with a "
                "streaming SVE record resumes with the SVE record's low bits instead",
    transform=_host(sigreturn_merge_by_fp_type=False), bounds="host-sig"))
register(Mutant(
    name="setup-return-live-smstop", base="upstream-6.14", source="99560c9452bb",
    catalogue=9, invariant="integrity",
    description="setup_return() issues SMSTOP on the live registers without the FP "
                "context: preempted in the frame copy, the task's SMSTOP lands on a "
                "streaming task's live, still bound state, which resumes with SM=0",
    transform=_host(signal_smstop_saved_state=False), bounds="host-sig"))
register(Mutant(
    name="sigreturn-sm-without-tif-sme", base="upstream-6.14", source="d2907cbe9ea0",
    catalogue=11, invariant="no-bug",
    description="an SVE record with SVE_SIG_FLAG_SM sets SVCR.SM without TIF_SME: the "
                "reload leaves SMCR.LEN as it was, and the next save finds the live "
                "streaming VL wrong for the task (WARN, SIGKILL)",
    transform=_host(sigreturn_sm_sets_tif_sme=False), bounds="host-sig"))
register(Mutant(
    name="sigreturn-za-without-sve-storage", base="upstream-6.14", source="ea8ccfddbce0",
    catalogue=12, invariant="no-bug",
    description="a ZA record sets TIF_SME with no thread.sve_state: back at EL0 SMSTART "
                "does not trap, and the first save of the streaming registers writes "
                "through NULL",
    transform=_host(sigreturn_za_allocates_sve=False), bounds="host-sig"))
register(Mutant(
    name="signal-fpmr-live", base="upstream-6.14", source="929fa99b1215", catalogue=29,
    invariant="confidentiality",
    description="signal delivery saves the state but leaves it live and bound, and "
                "preserve_fpmr_context() reads the live FPMR after the (preemptible) frame "
                "copy: another task's FPMR lands in the frame and in thread.uw.fpmr",
    transform=_host(signal_save_flush_early=False), bounds="host-sig"))
