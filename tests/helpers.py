"""Small builders shared by the tests: a model, a state, and scripted actions."""

from __future__ import annotations

from kvmctx import policies
from kvmctx.model.config import ModelConfig, TaskSpec, VcpuSpec
from kvmctx.model.machine import Model
from kvmctx.policies.base import Policy

ALL_FEATURES = frozenset({"sve", "guest-sve", "softirq-neon", "kernel-neon", "preempt", "migration",
                          "exit-user"})


def small_config(cpus: int = 2, sve_task: bool = True, vcpus: int = 1, kneon: bool = False,
                 vcpu_sve: bool = False, features: frozenset[str] = ALL_FEATURES) -> ModelConfig:
    tasks = [TaskSpec("T1", cpu=0, kneon=kneon)]
    if sve_task:
        tasks.append(TaskSpec("T2", sve=True, vl=256, cpu=min(1, cpus - 1)))
    for v in range(vcpus):
        tasks.append(TaskSpec(f"V{v}-thread", vcpu=v, cpu=v % cpus))
    vs = tuple(VcpuSpec(f"V{v}", sve=vcpu_sve, vl=256 if vcpu_sve else 128) for v in range(vcpus))
    return ModelConfig(cpus=cpus, tasks=tuple(tasks), vcpus=vs, features=features)


def model(policy: str | Policy = "upstream-6.14", **kw) -> Model:
    pol = policies.get(policy) if isinstance(policy, str) else policy
    return Model(small_config(**kw), pol)


def thread(m: Model, name: str) -> int:
    return m.thread_names.index(name)


def run_to_rest(m: Model, s: list[int], k: int) -> None:
    """Step CPU k's thread until it sits at a rest point (no softirqs)."""
    from kvmctx.model.flow import K_STEP
    from kvmctx.model.machine import STEP

    for _ in range(100):
        t = s[m.cur[k]]
        if not t:
            return
        pc = s[m.pc[t]]
        if m.p_kind[pc] != K_STEP or m.p_preempt[pc]:
            return
        m.apply(s, (STEP, k, 0))
    raise AssertionError("thread did not reach a rest point")


def no_violations(m: Model) -> None:
    assert not m.vio, [v.message for v in m.vio]


def examples(n: int) -> int:
    """A property test's example count: ``n``, or the loaded hypothesis profile's
    when that asks for more (``HYPOTHESIS_PROFILE=fuzz``, see tests/conftest.py)."""
    from hypothesis import settings

    return max(n, settings.default.max_examples)
