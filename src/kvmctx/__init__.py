"""kvmctx: model, price and check lazy FP/SIMD context switching for KVM on Arm."""

__version__ = "0.1.0"
