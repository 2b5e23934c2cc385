"""Ground truth: real Linux KVM/arm64 under QEMU emulation (kvmctx validate-real)."""
