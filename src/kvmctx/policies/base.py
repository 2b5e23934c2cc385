"""The policy interface, as policies and policy files import it.

It is the model's own (``kvmctx.model.policy``): the model defines what a
design may plug in, and designs depend on the model, not the other way round.
"""

from kvmctx.model.policy import (  # noqa: F401
    ALL_FEATURES,
    GAP_DEFAULT,
    GAP_NONE,
    GAP_SOFTIRQ,
    NOOP,
    Policy,
    StateField,
    Step,
    StepFn,
    TrapFn,
    replace_step,
)
