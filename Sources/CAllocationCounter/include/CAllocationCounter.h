// Counts heap allocations made by the calling thread, by standing in for the C allocator's entry
// points (malloc, calloc, realloc, the aligned forms) in the executable that links this target and
// forwarding each call to glibc's own implementation. Counting is per thread and off by default, so
// the cost elsewhere is one thread-local load per allocation.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Starts counting the calling thread's allocations from zero.
void tm_allocations_begin(void);

/// Stops counting and returns how many allocations the calling thread made since the begin call.
uint64_t tm_allocations_end(uint64_t *bytes);

/// Whether the allocator entry points of this target are the ones the process really uses.
int tm_allocations_interposed(void);

#ifdef __cplusplus
}
#endif
