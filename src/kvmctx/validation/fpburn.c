/* A host task that keeps using FP/SIMD for a while (kvmctx validation):
 * it competes with a vCPU thread for a CPU, forcing preemptions and
 * host FP use between the vCPU's runs.   fpburn SECONDS */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 5.0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    volatile double acc = 1.0;
    for (;;) {
        for (int i = 0; i < 20000; i++) acc = acc * 1.0000001 + 0.5;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 > secs) break;
    }
    printf("fpburn %g\n", (double)acc > 0 ? secs : -secs);
    return 0;
}
