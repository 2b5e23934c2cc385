"""Mutants of the host windows issue 14 opened: upstream-6.14 with one later fix undone.

Each needs the windows the model now has (feature ``trap-window``: the EL0
SVE/SME access traps as preemptible kernel paths) and is checked at the small
bounds that move a task between CPUs inside them. upstream-6.14 stands for
v6.14 with these fixes, as its stable series has them (docs/policies.md).
"""

from __future__ import annotations

from kvmctx.policies.mutants import Mutant, _host, register

register(Mutant(
    name="sve-trap-stale-binding", base="upstream-6.14", source="751ecf6afd65", catalogue=None,
    invariant="no-bug",
    description="do_sve_acc() finds the state in memory (the task was preempted and "
                "migrated inside the trap), converts the image to SVE but leaves "
                "fpsimd_cpu: migrated back, the task reuses the pre-trap registers with "
                "TIF_SVE set and the CPU's VL never set for it (CVE-2024-50275)",
    transform=_host(sve_trap_flushes_task=False), bounds="sve-migration"))
register(Mutant(
    name="sme-trap-stale-binding", base="upstream-6.14", source="d3eaab3c7090",
    catalogue=None, invariant="no-bug",
    description="do_sme_acc() with the state in memory sets TIF_SME but leaves "
                "fpsimd_cpu: migrated back, the task reuses its old binding with SMEN "
                "still off and traps again",
    transform=_host(sme_trap_flushes_task=False), bounds="sme-migration"))
