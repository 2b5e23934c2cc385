"""The oracle: the cheapest safe FP switching for a workload, knowing its future.

Every design pays for moving FP state between registers and memory. Strip
that down to what the workload forces: each CPU's register file holds one
context's state at a time; a context that *uses* FP on a CPU needs its
latest state there; a context whose latest state exists only in some
registers must be saved before those registers are overwritten (or it is
lost - not safe). The oracle knows every future use, so it

* never traps (it restores a state exactly when, and where, it is used);
* restores a context's state only when a use finds the registers holding
  something else;
* saves a state only when it is dirty (newer than memory) and its registers
  are about to be overwritten (another context's use, kernel-mode NEON, a
  migration of the context's next use to another CPU, a CPU power loss);
* saves only the FPSIMD view of an SVE state whose upper bits the syscall
  ABI lets it discard, and only the FPSIMD view of a state whose upper bits
  are zero;
* with SME, moves the streaming Z/P registers at the streaming VL while a
  task is in streaming mode (a syscall leaves it, zeroing them) and ZA/ZT0
  while ZA is on.

With one register file per CPU there is no choice of victim, and saving
earlier or restoring earlier can only add work, so this greedy schedule is
the least work any safe design can do for the same sequence of uses (the
tests check it against an exhaustive search on small workloads). Its cost,
priced with the same cost profile, is the lower bound the policies are
measured against. It is computed from the sequence of FP uses of a
simulation, which does not depend on the design (the simulator's workload
decisions are policy-independent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kvmctx.model import counters as C
from kvmctx.model.feat.sme import USER_SME, USER_SMSTOP
from kvmctx.model.machine import GFP, GSVE, KNEON, KVMRUN, READ, SIRQ, SYSCALL, UFP, USVE

USE, EVICT, DISCARD = 0, 1, 2


@dataclass
class FpTrace:
    """The design-independent sequence of FP uses of one simulation."""

    events: list[tuple[int, int, int, int]] = field(default_factory=list)
    # (kind, cpu, context, flags): USE flags bit0 = write, bit1 = SVE write,
    # bit2 = SMSTART (streaming mode and ZA on), bit3 = SMSTOP (both off)

    def observer(self, sim: Any, action: tuple[int, int, int], _vio: list) -> None:
        m = sim.m
        s = sim.s
        kind, k, _ = action
        if kind in (UFP, USVE, READ):
            t = s[m.cur[k]]
            self.events.append((USE, k, t, (kind != READ) | ((kind == USVE) << 1)))
        elif kind in (GFP, GSVE):
            t = s[m.cur[k]]
            c = m.vctx[m.vcpu_of[t]]
            self.events.append((USE, k, c, 1 | ((kind == GSVE) << 1)))
        elif kind == USER_SME:
            self.events.append((USE, k, s[m.cur[k]], 1 | 2 | 4))
        elif kind == USER_SMSTOP:
            self.events.append((USE, k, s[m.cur[k]], 1 | 8))
        elif kind in (SIRQ, KNEON):
            self.events.append((EVICT, k, 0, 0))
        elif kind in (SYSCALL, KVMRUN):
            self.events.append((DISCARD, k, s[m.cur[k]], 0))


def oracle_counters(trace: FpTrace, fpsimd_bytes: list[int], sve_bytes: list[int],
                    ncpu: int, ssve_bytes: list[int] | None = None,
                    za_bytes: list[int] | None = None) -> list[int]:
    """Run the greedy schedule over a trace; return counters (kvmctx.model.counters).
    ``ssve_bytes``/``za_bytes``: per task, its streaming Z/P/FFR and ZA+ZT0 sizes."""
    ctr = C.new()
    streaming: set[int] = set()      # in streaming mode: Z/P at the streaming VL
    za_live: set[int] = set()        # ZA on: ZA/ZT0 are part of the state
    occupant = [0] * ncpu            # context whose latest state CPU k's registers hold
    holders: dict[int, set[int]] = {}  # context -> CPUs whose registers hold its latest
    dirty: set[int] = set()          # latest only in registers, not in memory
    hi_live: set[int] = set()        # upper SVE bits non-zero in the latest state
    discardable: set[int] = set()    # ... but the syscall ABI lets them go

    def nbytes(c: int, saving: bool) -> int:
        za = za_bytes[c] if c in za_live and za_bytes else 0
        if c in streaming and ssve_bytes:
            return ssve_bytes[c] + za
        if c in hi_live and not (saving and c in discardable):
            return sve_bytes[c] + za
        return fpsimd_bytes[c] + za

    def save(c: int) -> None:
        ctr[C.SAVES] += 1
        b = nbytes(c, True)
        if c in za_live:
            ctr[C.ZA_SAVES] += 1
        if b != fpsimd_bytes[c]:
            ctr[C.SVE_SAVES] += 1
        elif c in hi_live:
            hi_live.discard(c)  # the discarded upper bits are zero from now on
        ctr[C.BYTES_SAVED] += b
        dirty.discard(c)

    def evict(k: int) -> None:
        o = occupant[k]
        if o:
            hs = holders.get(o, set())
            if o in dirty and hs == {k}:
                save(o)  # the last copy of its latest state is about to go
            hs.discard(k)
            occupant[k] = 0

    for kind, k, c, flags in trace.events:
        if kind == USE:
            hs = holders.setdefault(c, set())
            if k not in hs:
                if c in dirty:
                    save(c)  # its latest is only in another CPU's registers
                evict(k)
                ctr[C.RESTORES] += 1
                b = nbytes(c, False)
                if c in za_live:
                    ctr[C.ZA_RESTORES] += 1
                if b != fpsimd_bytes[c]:
                    ctr[C.SVE_RESTORES] += 1
                ctr[C.BYTES_RESTORED] += b
                occupant[k] = c
                hs.add(k)
            if flags & 1:
                for j in list(hs):
                    if j != k:
                        occupant[j] = 0  # stale copies elsewhere
                holders[c] = {k}
                dirty.add(c)
                discardable.discard(c)
                if flags & 4:
                    streaming.add(c)
                    za_live.add(c)
                elif flags & 8:
                    streaming.discard(c)
                    za_live.discard(c)
                if flags & 2:
                    hi_live.add(c)
                else:
                    hi_live.discard(c)
        elif kind == EVICT:
            evict(k)
        elif kind == DISCARD:
            if c in streaming:
                # A syscall leaves streaming mode: Z/P are zeroed, ZA stays.
                streaming.discard(c)
                hi_live.discard(c)
            elif c in hi_live:
                discardable.add(c)
    return ctr


def brute_force_min_cost(events: list[tuple[int, int, int, int]], ncpu: int,
                         size: dict[int, int]) -> int:
    """Least bytes moved over all safe schedules (FPSIMD-only contexts), by search.

    Between events, a schedule may save any dirty state, restore any context's
    saved state into any CPU (overwriting it), or do nothing; an event must then
    find its preconditions met: a use finds the context's latest state in that
    CPU's registers; an eviction (or a use overwriting registers) must not
    destroy a latest state that is not also in memory. Dijkstra over
    (event index, registers, which latest states are in memory).
    """
    import heapq

    contexts = sorted({c for kind, _, c, _ in events if kind == USE})
    # State: regs (tuple of (ctx, is_latest) per CPU), mem_latest (frozenset).
    start = (0, tuple((0, False) for _ in range(ncpu)), frozenset(contexts))
    best: dict[tuple, int] = {start: 0}
    heap = [(0, start)]
    n = len(events)
    while heap:
        cost, st = heapq.heappop(heap)
        if best.get(st, 1 << 60) < cost:
            continue
        i, regs, mem = st
        if i == n:
            return cost

        def push(nst: tuple, ncost: int) -> None:
            if ncost < best.get(nst, 1 << 60):
                best[nst] = ncost
                heapq.heappush(heap, (ncost, nst))

        # Free operations between events: save a latest register copy.
        for c, latest in regs:
            if c and latest and c not in mem:
                push((i, regs, mem | {c}), cost + size[c])
        # Restore a context from memory into CPU k (only if its latest is in memory,
        # and the registers it overwrites are not an unsaved latest state).
        for k, (o, olatest) in enumerate(regs):
            if o and olatest and o not in mem:
                continue
            for c in contexts:
                if c in mem and regs[k] != (c, True):
                    nregs = tuple((c, True) if j == k else r for j, r in enumerate(regs))
                    push((i, nregs, mem), cost + size[c])
        kind, k, c, flags = events[i]
        if kind == USE:
            if regs[k] == (c, True):
                if flags & 1:
                    # A write: memory copy (if any) becomes stale; other CPUs' copies too.
                    nregs = tuple((r[0], False) if (r[0] == c and j != k) else r
                                  for j, r in enumerate(regs))
                    push((i + 1, nregs, mem - {c}), cost)
                else:
                    push((i + 1, regs, mem), cost)
        elif kind == EVICT:
            o, olatest = regs[k]
            if not (o and olatest and o not in mem):
                nregs = tuple((0, False) if j == k else r for j, r in enumerate(regs))
                push((i + 1, nregs, mem), cost)
        else:
            push((i + 1, regs, mem), cost)
    raise ValueError("no safe schedule")
