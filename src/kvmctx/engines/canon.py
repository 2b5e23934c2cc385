"""State canonicalisation for the checker: what is reduced, and why it is sound.

Each reduction quotients states by a relation that the transition function
and every invariant respect, so a violation is reachable iff it is
reachable in the quotient:

1. **Version renumbering.** The model compares register tags only for
   equality with their owner's latest value of the same bank
   (``want_lo``/``want_hi``); no rule, policy or invariant looks at how old
   a stale value is, or compares two stale values. So every tag becomes
   version 1 if it is its owner's latest value for its bank and version 0
   otherwise, and every version counter becomes 1 (the next write makes
   version 2, distinct from both). Zero (owner 0) and GARBAGE keep their
   values. This also makes the state space finite. One exception: a
   feature may declare a *second reference* per thread (a signal frame,
   whose value sigreturn makes the latest again); tags equal to it become
   version 2 and the counters 2, so it stays distinct from both.

2. **Dead fields.** ``TIF_FOREIGN_FPSTATE`` of a thread that is not running
   is never read before it is written: every switch-in recomputes it
   (``fpsimd_thread_switch``) and every reader looks at ``current``. It is
   set to 1 for threads not running on any CPU. The idle thread's runqueue
   field is never read; it stays 0.

3. **Symmetry.** CPUs are identical: no step depends on a CPU's number,
   only on equalities between CPU numbers (``fpsimd_cpu == k``,
   ``vcpu->cpu``...). Permuting CPUs - reordering per-CPU fields and
   renaming every field that *holds* a CPU number - maps runs to runs. The
   same holds for host threads with identical specs (same SVE use, VL, SME
   and kernel-NEON use, not running a vCPU): permuting them permutes their
   context ids everywhere (thread fields, context fields, owners inside
   tags, ``fpsimd_last_state``). The canonical form is the least relabelled
   state, as bytes, over all these permutations.

Every field of the layout declares what its values refer to (a CPU, a
thread, a context, a tag of the low or high bank, a version), and that is
all the relabelling uses: a policy's own fields take part automatically.

Representation: a canonical state is ``bytes`` (every field fits in 0..255:
tags have version <= 2 one step after a canonical state, ``NO_CPU`` is 255),
so packing, hashing and comparison run in C.
"""

from __future__ import annotations

from itertools import permutations, product
from operator import itemgetter
from typing import Any

from kvmctx.model.layout import CPU, CTX, THREAD
from kvmctx.model.values import OWNER_BITS, OWNER_MASK

# Stale-by-default translation: a tag with any version maps to version 0.
_BASE = bytes((x & OWNER_MASK) if x > OWNER_MASK else x for x in range(256))


class Canon:
    def __init__(self, m: Any, symmetry: bool = True) -> None:
        self.m = m
        L = m.layout
        self.size = L.size
        self.lo0 = m.tag_lo_start
        self.tags_end = m.tags_end
        self.banks = list(m.banks)  # (start, end, start of its want field)
        self.extra = list(getattr(m, "bank_extra", [-1] * len(self.banks)))
        self.has_extra = any(e >= 0 for e in self.extra)
        self.nthreads_x = m.nthreads
        self.nctx = m.nctx
        # Version counters: 1 (2 with second references) for every context that
        # has one, 0 otherwise.
        v0, v1 = m.slice_ver
        self.ver0, self.ver1 = v0, v1
        top = 2 if self.has_extra else 1
        self.ver_const = bytes(top if m.init_state[i] >= 1 else 0 for i in range(v0, v1))
        self.foreign0 = m.foreign[0]
        self.cur_idx = list(m.cur)
        self.nthreads = m.nthreads
        self.rq_idle = m.rq[0]
        self.relabels = self._relabelings(m) if symmetry else []
        self._tables: dict[bytes, tuple[bytes, bytes]] = {}

    # ------------------------------------------------------------- canonical

    def _tables_for(self, wants: bytes) -> tuple[bytes, ...]:
        """One translation table per bank, from that bank's latest values (and
        second references, laid out after all the banks' latest values)."""
        n = self.nctx
        nb = len(self.banks)
        nt = self.nthreads_x
        tabs = []
        xpos = nb * n
        for i in range(nb):
            tab = bytearray(_BASE)
            if self.extra[i] >= 0:
                for x in wants[xpos:xpos + nt]:
                    if x > OWNER_MASK:
                        tab[x] = (2 << OWNER_BITS) | (x & OWNER_MASK)
                xpos += nt
            for w in wants[i * n:(i + 1) * n]:
                if w > OWNER_MASK:
                    tab[w] = (1 << OWNER_BITS) | (w & OWNER_MASK)
            tabs.append(bytes(tab))
        out = tuple(tabs)
        if len(self._tables) < 1 << 16:
            self._tables[wants] = out
        return out

    def key(self, s: list[int]) -> bytes:
        """The canonical bytes of state s (s itself is left unchanged)."""
        try:
            b = bytes(s)
        except ValueError:
            b = bytes(self._small_versions(s))
        return self.key_bytes(b)

    def key_bytes(self, b: bytes) -> bytes:
        """The canonical bytes of a state already packed as bytes."""
        n = self.nctx
        wants = b"".join(b[w:w + n] for _a, _z, w in self.banks)
        if self.has_extra:
            nt = self.nthreads_x
            wants += b"".join(b[e:e + nt] for e in self.extra if e >= 0)
        tabs = self._tables.get(wants)
        if tabs is None:
            tabs = self._tables_for(wants)
        r = bytearray()
        for (a, z, _w), tab in zip(self.banks, tabs, strict=True):
            r += b[a:z].translate(tab)
        r += b[self.tags_end:]
        r[self.ver0:self.ver1] = self.ver_const
        running = {r[i] for i in self.cur_idx}
        f0 = self.foreign0
        for t in range(1, self.nthreads):
            if t not in running:
                r[f0 + t] = 1
        base = best = bytes(r)
        rq_idle = self.rq_idle
        lo0, te = self.lo0, self.tags_end
        for ig, slices, tagtab, _src in self.relabels:
            x = bytearray(ig(base))
            for a, z, tab in slices:
                x[a:z] = x[a:z].translate(tab)
            x[rq_idle] = 0
            if tagtab is not None:
                x[lo0:te] = x[lo0:te].translate(tagtab)
            cand = bytes(x)
            if cand < best:
                best = cand
        return best

    def _small_versions(self, s: list[int]) -> list[int]:
        """Renumber a raw state (arbitrary versions, e.g. from the simulator) so every
        tag has version 1 (latest) or 0; the fast path then handles it."""
        r = list(s)
        n = self.nctx
        nt = self.nthreads_x
        for (lo, hi, w), e in zip(self.banks, self.extra, strict=True):
            want = s[w:w + n]
            second = s[e:e + nt] if e >= 0 else []
            for i in range(lo, hi):
                x = r[i]
                if x > OWNER_MASK:
                    o = x & OWNER_MASK
                    if o < n and x == want[o]:
                        r[i] = (1 << OWNER_BITS) | o
                    elif o < len(second) and x == second[o]:
                        r[i] = (2 << OWNER_BITS) | o
                    else:
                        r[i] = o
        top = 2 if self.has_extra else 1
        for i in range(self.ver0, self.ver1):
            r[i] = min(r[i], top)
        return r

    def tables(self) -> dict[str, Any]:
        """Everything ``key_bytes`` uses, as plain data (the native engine's copy)."""
        return {
            "size": self.size, "banks": self.banks, "extra": self.extra, "nctx": self.nctx,
            "nthreads_x": self.nthreads_x, "tags_end": self.tags_end, "ver0": self.ver0,
            "ver1": self.ver1, "ver_const": self.ver_const, "foreign0": self.foreign0,
            "cur_idx": self.cur_idx, "nthreads": self.nthreads, "rq_idle": self.rq_idle,
            "lo0": self.lo0, "owner_bits": OWNER_BITS, "owner_mask": OWNER_MASK,
            "relabels": [(list(src), [(a, z, bytes(t)) for a, z, t in slices], tagtab)
                         for _ig, slices, tagtab, src in self.relabels],
        }

    def canon(self, s: list[int]) -> tuple[int, ...]:
        """The canonical state as a tuple (for tests and tools)."""
        return tuple(self.key(s))

    # ---------------------------------------------------------------- symmetry

    def _relabelings(self, m: Any) -> list[tuple]:
        ncpu = m.ncpu
        classes: dict[tuple, list[int]] = {}
        for i, ts in enumerate(m.config.tasks, start=1):
            if ts.vcpu >= 0:
                continue
            classes.setdefault((ts.sve, ts.vl, ts.sme, ts.svl, ts.kneon), []).append(i)
        choices = [[dict(zip(mem, p, strict=True)) for p in permutations(mem)]
                   for mem in classes.values() if len(mem) > 1]
        out = []
        for cp in permutations(range(ncpu)):
            for tchoice in (product(*choices) if choices else [()]):
                tmap = {t: t for t in range(m.nthreads)}
                for d in tchoice:
                    tmap.update(d)
                if list(cp) == list(range(ncpu)) and all(tmap[t] == t for t in tmap):
                    continue
                out.append(self._compile(m, cp, tmap))
        return out

    @staticmethod
    def _compile(m: Any, cpu_perm: tuple[int, ...], tmap: dict[int, int]) -> tuple:
        L = m.layout
        cmap = list(range(256))
        for t, u in tmap.items():
            if t:
                cmap[t] = u
                cmap[m.kn_ctx[t]] = m.kn_ctx[u]
        cpu_tab = list(range(256))
        for k in range(m.ncpu):
            cpu_tab[k] = cpu_perm[k]
        thr_tab = list(range(256))
        for t, u in tmap.items():
            thr_tab[t] = u
        src = list(range(L.size))
        for f in L.fields.values():
            if f.dim == CPU:
                for k in range(f.count):
                    src[f.start + cpu_perm[k]] = f.start + k
            elif f.dim == THREAD:
                for t in range(f.count):
                    src[f.start + tmap[t]] = f.start + t
            elif f.dim == CTX:
                for c in range(f.count):
                    src[f.start + cmap[c]] = f.start + c
        slices = [(m.slice_cpu[0], m.slice_cpu[1], bytes(cpu_tab))]
        if any(thr_tab[t] != t for t in range(m.nthreads)):
            slices.append((m.slice_thread[0], m.slice_thread[1], bytes(thr_tab)))
            slices.append((m.slice_ctx[0], m.slice_ctx[1], bytes(cmap)))
            tag_tab = bytes((x & ~OWNER_MASK) | cmap[x & OWNER_MASK] for x in range(256))
        else:
            tag_tab = None
        return itemgetter(*src), slices, tag_tab, src
