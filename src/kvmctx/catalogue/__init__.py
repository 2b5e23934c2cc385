"""The bug catalogue as named mutants: a design with one public bug put back.

These are the checker's test data, not designs: each takes a design from
kvmctx.policies and undoes one fix (a HostConfig flag, a hook step), and
``kvmctx check --catalogue`` must find every one at its bounds. The registry
and the KVM entries are in ``mutants``; the other modules hold the entries of
one area each and register themselves (and the named bounds they need) on
import: ``host`` (PM, hotplug, exec, signals, SME, FPMR, regsets), ``vcpu``
(vCPU reset, ONE_REG), ``windows`` (trap and return windows, kernel-mode
NEON), ``regs`` (trap-control ISBs, SME regsets), ``signals`` (signal
frames), ``life`` (VL changes, clone and exit).
"""
