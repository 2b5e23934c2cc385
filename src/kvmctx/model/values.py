"""Register contents as tags, not bits.

A register bank never holds real data in kvmctx. It holds a *tag*: which
context wrote the value and which of that context's writes it was. That is
all the invariants need: a read is correct when the tag is the reader's own
latest one, confidential when the owner is the reader, and so on.

A tag is one int, so banks, save areas and whole states stay flat tuples of
ints (hashable, cheap to copy):

    tag = (version << OWNER_BITS) | owner

``owner`` 0 with version 0 is the architectural zero (ZERO): the value a
register has after an FPSIMD write clears the upper SVE bits, or after
``sve_flush_live``. It has no owner, so anybody may read it. ``GARBAGE``
is what a CPU holds after power-down or hotplug: reading it is always an
integrity violation and it never equals anybody's latest value.
"""

from __future__ import annotations

OWNER_BITS = 6
OWNER_MASK = (1 << OWNER_BITS) - 1
MAX_OWNERS = OWNER_MASK - 1  # owner ids 1..62 are contexts

ZERO = 0
GARBAGE = OWNER_MASK  # owner 63, version 0

# Save formats (struct thread_struct::fp_type, enum fp_type in fpsimd.h).
FP_STATE_FPSIMD = 0
FP_STATE_SVE = 1

# cpu_fp_state::to_save (v6.2+): what the save path should store.
TO_SAVE_CURRENT = 0  # decide from current's flags (TIF_SVE / in_syscall)
TO_SAVE_FPSIMD = 1
TO_SAVE_SVE = 2

NONE = 0  # "no context": an empty per-CPU binding, no owner
# thread.fpsimd_cpu == NR_CPUS, vcpu->cpu == -1. A byte-sized sentinel so every
# field of a (canonical) state fits in 0..255 and states pack into bytes.
NO_CPU = 255


def tag(owner: int, version: int) -> int:
    return (version << OWNER_BITS) | owner


def owner_of(t: int) -> int:
    return t & OWNER_MASK


def version_of(t: int) -> int:
    return t >> OWNER_BITS


def describe(t: int, names: dict[int, str] | None = None) -> str:
    """Human form of a tag: ``T1#3`` (T1's third write), ``0``, ``garbage``."""
    if t == ZERO:
        return "0"
    if t == GARBAGE:
        return "garbage"
    o = owner_of(t)
    name = names.get(o, f"ctx{o}") if names else f"ctx{o}"
    return f"{name}#{version_of(t)}"
