/* kvmctx validation VMM: one or two vCPUs running guest.S under /dev/kvm.
 *
 *   vmm GUEST_BIN SCENARIO ITERS [VCPUS] [SVE]
 *
 * Each vCPU runs the guest loop; every MMIO exit carries 3*i, which is checked
 * (a mismatch means the FP state was corrupted: exit status 3). Prints one
 * line per vCPU: "vcpu N exits E mmio M ok".
 * Written for kvmctx (after the way KVM selftests drive /dev/kvm).
 */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUEST_BASE 0x40000000UL
#define GUEST_SIZE 0x200000UL
#define MMIO_ADDR  0x20000000UL

static int vm_fd;
static void *guest_mem;
static long scenario, iters;
static int use_sve;
/* Every vCPU is created before any vCPU runs. pKVM (protected mode, 6.12) makes
 * its hyp vCPUs at the VM's first KVM_RUN; a vCPU created later has none, its
 * KVM_RUN returns -EINVAL from hyp, which the host reads as an exit with an
 * SError and panics ("Asynchronous SError Interrupt", ESR 0xbc000000). */
static pthread_barrier_t created;

#define ARM64_CORE_REG(x) (KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE | \
                           (offsetof(struct kvm_regs, x) / sizeof(uint32_t)))

static void die(const char *what) { perror(what); exit(2); }

static void set_reg(int fd, uint64_t id, uint64_t val) {
    struct kvm_one_reg r = { .id = id, .addr = (uint64_t)&val };
    if (ioctl(fd, KVM_SET_ONE_REG, &r) < 0) die("KVM_SET_ONE_REG");
}

struct vcpu { int id; long exits, mmio; int bad; };

static void *run_vcpu(void *arg) {
    struct vcpu *v = arg;
    int fd = ioctl(vm_fd, KVM_CREATE_VCPU, v->id);
    if (fd < 0) die("KVM_CREATE_VCPU");
    struct kvm_vcpu_init init;
    if (ioctl(vm_fd, KVM_ARM_PREFERRED_TARGET, &init) < 0) die("KVM_ARM_PREFERRED_TARGET");
    if (use_sve) init.features[0] |= 1u << KVM_ARM_VCPU_SVE;
    if (ioctl(fd, KVM_ARM_VCPU_INIT, &init) < 0) die("KVM_ARM_VCPU_INIT");
    if (use_sve) {
        int feat = KVM_ARM_VCPU_SVE;
        if (ioctl(fd, KVM_ARM_VCPU_FINALIZE, &feat) < 0) die("KVM_ARM_VCPU_FINALIZE");
    }
    set_reg(fd, ARM64_CORE_REG(regs.pc), GUEST_BASE);
    set_reg(fd, ARM64_CORE_REG(regs.regs[0]), (uint64_t)scenario);
    set_reg(fd, ARM64_CORE_REG(regs.regs[1]), (uint64_t)iters);
    int sz = ioctl(open("/dev/kvm", O_RDWR), KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (run == MAP_FAILED) die("mmap kvm_run");
    pthread_barrier_wait(&created);
    long expect = 0;
    for (;;) {
        if (ioctl(fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR) continue;
            die("KVM_RUN");
        }
        v->exits++;
        if (run->exit_reason == KVM_EXIT_MMIO && run->mmio.is_write) {
            uint64_t val;
            memcpy(&val, run->mmio.data, 8);
            if (run->mmio.phys_addr == MMIO_ADDR + 8) break;   /* finished */
            if (run->mmio.phys_addr == MMIO_ADDR + 16) {
                fprintf(stderr, "vcpu %d: the guest took an exception, ESR_EL1 %#lx\n",
                        v->id, (unsigned long)val);
                v->bad = 1;
                break;
            }
            v->mmio++;
            if ((long)val != 3 * expect) {
                fprintf(stderr, "vcpu %d: iteration %ld: got %ld, want %ld: FP state "
                        "corrupted\n", v->id, expect, (long)val, 3 * expect);
                v->bad = 1;
            }
            expect++;
            continue;
        }
        if (run->exit_reason == KVM_EXIT_SYSTEM_EVENT) break;
        fprintf(stderr, "vcpu %d: unexpected exit reason %u\n", v->id, run->exit_reason);
        v->bad = 1;
        break;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: vmm GUEST_BIN SCENARIO ITERS [VCPUS] [SVE]\n");
        return 2;
    }
    scenario = atol(argv[2]);
    iters = atol(argv[3]);
    int nvcpu = argc > 4 ? atoi(argv[4]) : 1;
    use_sve = argc > 5 ? atoi(argv[5]) : 0;
    int kvm = open("/dev/kvm", O_RDWR);
    if (kvm < 0) die("/dev/kvm");
    vm_fd = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm_fd < 0) die("KVM_CREATE_VM");
    guest_mem = mmap(NULL, GUEST_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (guest_mem == MAP_FAILED) die("mmap guest");
    int g = open(argv[1], O_RDONLY);
    if (g < 0) die(argv[1]);
    if (read(g, guest_mem, GUEST_SIZE) <= 0) die("read guest");
    close(g);
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = GUEST_BASE, .memory_size = GUEST_SIZE,
        .userspace_addr = (uint64_t)guest_mem,
    };
    if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
    struct vcpu v[4] = {{0}};
    pthread_t th[4];
    if (nvcpu < 1 || nvcpu > 4) nvcpu = 1;
    pthread_barrier_init(&created, NULL, nvcpu);
    for (int i = 0; i < nvcpu; i++) {
        v[i].id = i;
        pthread_create(&th[i], NULL, run_vcpu, &v[i]);
    }
    int bad = 0;
    for (int i = 0; i < nvcpu; i++) {
        pthread_join(th[i], NULL);
        printf("vcpu %d exits %ld mmio %ld %s\n", i, v[i].exits, v[i].mmio,
               v[i].bad ? "CORRUPT" : "ok");
        bad |= v[i].bad;
    }
    fflush(stdout);
    return bad ? 3 : 0;
}
