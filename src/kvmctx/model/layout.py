"""The flat state layout.

A model state is one flat list of ints (a tuple when the checker stores it).
Each named field is an array over one *dimension* (CPUs, threads, contexts,
vCPUs, or a single global slot) and gets a list of absolute indices, so the
transition code reads ``s[m.bound[k]]`` for "CPU k's fpsimd_last_state".

Fields also say what their values *refer to* (a CPU id, a thread id, a
context id, or a register tag of the low/high bank). The checker needs that
to canonicalise states: renumber versions and permute symmetric CPUs or
threads without knowing any field by name.
"""

from __future__ import annotations

from dataclasses import dataclass

# Dimensions
CPU = "cpu"
THREAD = "thread"
CTX = "ctx"
VCPU = "vcpu"
GLOBAL = "global"

# What a field's value refers to (for canonicalisation)
REF_NONE = None
REF_CPU = "cpu"          # a CPU id, or -1
REF_THREAD = "thread"    # a thread id (0 = idle)
REF_CTX = "ctx"          # a context id (0 = none)
TAG_LO = "tag_lo"        # a register tag, compared against want_lo of its owner
TAG_HI = "tag_hi"        # a register tag, compared against want_hi of its owner
TAG_ZA = "tag_za"        # a register tag of the SME ZA bank
REF_VER = "ver"          # a context's version counter
REF_PC = "pc"            # a program point


@dataclass(frozen=True)
class Field:
    name: str
    dim: str
    ref: str | None
    start: int
    count: int
    init: int
    owner: str = "model"   # "model" or the policy name that declared it


class Layout:
    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = dict(sizes)
        self.sizes[GLOBAL] = 1
        self.fields: dict[str, Field] = {}
        self.init: list[int] = []

    def add(self, name: str, dim: str, init: int = 0, ref: str | None = None,
            owner: str = "model") -> list[int]:
        if name in self.fields:
            raise ValueError(f"state field {name!r} declared twice")
        n = self.sizes[dim]
        start = len(self.init)
        self.fields[name] = Field(name, dim, ref, start, n, init, owner)
        self.init.extend([init] * n)
        return list(range(start, start + n))

    @property
    def size(self) -> int:
        return len(self.init)

    def describe_index(self, i: int) -> str:
        for f in self.fields.values():
            if f.start <= i < f.start + f.count:
                return f"{f.name}[{i - f.start}]"
        return f"?[{i}]"
