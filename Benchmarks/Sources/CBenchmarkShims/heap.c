#include "CBenchmarkShims.h"

#include <malloc.h>
#include <stdint.h>

size_t cbench_heap_bytes_in_use(void) {
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
}

// The malloc-counting interposer the benchmarks run with puts a 16-byte header in front of every
// allocation it hands out, so glibc's bytes in use read 16 bytes high per live allocation. Its
// counters say how many allocations are live; the symbol is weak, so a build without the
// interposer links and reads no correction.
void malloc_interposer_get_stats(int64_t *malloc_count, int64_t *malloc_bytes, int64_t *malloc_small,
                                 int64_t *malloc_large, int64_t *free_count, int64_t *free_bytes)
    __attribute__((weak));

int64_t cbench_live_allocations(void) {
    if (!malloc_interposer_get_stats) return -1;
    int64_t malloc_count = 0, malloc_bytes = 0, malloc_small = 0, malloc_large = 0, free_count = 0, free_bytes = 0;
    malloc_interposer_get_stats(&malloc_count, &malloc_bytes, &malloc_small, &malloc_large, &free_count, &free_bytes);
    return malloc_count - free_count;
}
