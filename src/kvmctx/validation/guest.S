// Bare-metal AArch64 guest for kvmctx validation (EL1, MMU off).
// Loaded at GUEST_BASE; the VMM sets x0 = scenario, x1 = iterations and PC.
// Every iteration ends in a store to MMIO_ADDR (an unbacked address): an exit
// to the VMM (KVM_EXIT_MMIO) carrying a value the VMM checks, so any FP
// corruption fails the run. Markers: hvc #0x4b56 before the loop, hvc #0x4b57
// after it, so the emulator log's window excludes boot noise.
//
// Scenarios (x0):
//   0 fp-every-exit  : FP work in every iteration, checked value 3*i
//   1 fp-every-other : FP work on odd iterations only
//   2 no-fp          : integer only
//   3 sve            : SVE work in every iteration (vCPU created with SVE)
//   4 fp-long        : one long FP loop per iteration (timer IRQs exit meanwhile)
        .equ MMIO_ADDR, 0x20000000
        .text
        .global _start, loop, fp, fp_end, every_other, nofp, sve, sve_end, longfp
        .global longfp_end, report, done
_start:
        // Reset leaves CPACR_EL1.FPEN/ZEN trapping FP and SVE at EL1: enable them
        // as a guest kernel would (KVM's own lazy trap is at EL2, underneath).
        mov     x9, #(3 << 20)
        orr     x9, x9, #(3 << 16)
        msr     cpacr_el1, x9
        adr     x9, vectors
        msr     vbar_el1, x9
        isb
        mov     x19, x0                 // scenario
        mov     x20, x1                 // iterations
        mov     x21, #0                 // i
        ldr     x22, =MMIO_ADDR
        hvc     #0x4b56                 // window start
loop:
        cmp     x21, x20
        b.ge    done
        cmp     x19, #1
        b.eq    every_other
        cmp     x19, #2
        b.eq    nofp
        cmp     x19, #3
        b.eq    sve
        cmp     x19, #4
        b.eq    longfp
fp:     // v0 = i; v1 = 2*v0 + v0 -> 3*i, round trip through the FP registers
        scvtf   d0, x21
        fadd    d1, d0, d0
        fadd    d1, d1, d0
        fcvtzs  x2, d1
fp_end:
        b       report
every_other:
        tst     x21, #1
        b.ne    fp
nofp:
        add     x2, x21, x21
        add     x2, x2, x21
        b       report
sve:    // z0 = i (all lanes); z1 = z0 + z0 + z0; lane 0 back to x2
        ptrue   p0.d
        dup     z0.d, x21
        add     z1.d, z0.d, z0.d
        add     z1.d, z1.d, z0.d
        fmov    x2, d1
sve_end:
        b       report
longfp: // a long FP loop: 3*i computed as 200000 additions of 0 plus the value
        scvtf   d0, x21
        fadd    d1, d0, d0
        fadd    d1, d1, d0
        fmov    d3, xzr
        movz    x4, #0x3
        lsl     x4, x4, #16              // 196608 rounds
1:      fadd    d1, d1, d3
        subs    x4, x4, #1
        b.ne    1b
        fcvtzs  x2, d1
longfp_end:
report:
        str     x2, [x22]               // MMIO exit; the VMM checks x2 == 3*i
        add     x21, x21, #1
        b       loop
done:
        hvc     #0x4b57                 // window end
        mov     x2, #-1
        str     x2, [x22, #8]           // "finished" MMIO
        b       done
        .ltorg

// Any exception the guest takes itself is a failure: report ESR and stop.
        .balign 2048
vectors:
        .rept   16
        .balign 128
        mrs     x2, esr_el1
        ldr     x22, =MMIO_ADDR
        str     x2, [x22, #16]
        b       .
        .ltorg
        .endr
