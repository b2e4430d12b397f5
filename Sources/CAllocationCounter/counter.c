#define _GNU_SOURCE
#include "CAllocationCounter.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define TM_SANITIZED 1
#endif
#endif

#ifndef TM_SANITIZED
// glibc's own allocator, under the names it exports for exactly this purpose.
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void __libc_free(void *pointer);

static __thread int counting;
static __thread uint64_t counted;
static __thread uint64_t counted_bytes;
static __thread int seen;

static inline void note(size_t size) {
    seen = 1;
    if (counting) {
        counted += 1;
        counted_bytes += size;
    }
}

void *malloc(size_t size) {
    note(size);
    return __libc_malloc(size);
}

void *calloc(size_t count, size_t size) {
    note(count * size);
    return __libc_calloc(count, size);
}

void *realloc(void *pointer, size_t size) {
    note(size);
    return __libc_realloc(pointer, size);
}

void *memalign(size_t alignment, size_t size) {
    note(size);
    return __libc_memalign(alignment, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
    note(size);
    return __libc_memalign(alignment, size);
}

int posix_memalign(void **result, size_t alignment, size_t size) {
    note(size);
    void *pointer = __libc_memalign(alignment < sizeof(void *) ? sizeof(void *) : alignment, size);
    if (pointer == NULL) return ENOMEM;
    *result = pointer;
    return 0;
}

void free(void *pointer) { __libc_free(pointer); }

#else
// A sanitizer owns the allocator entry points: count nothing, and say so.
static __thread int counting;
static __thread uint64_t counted;
static __thread uint64_t counted_bytes;
#endif

void tm_allocations_begin(void) {
    counted = 0;
    counted_bytes = 0;
    counting = 1;
}

uint64_t tm_allocations_end(uint64_t *bytes) {
    counting = 0;
    if (bytes != NULL) *bytes = counted_bytes;
    return counted;
}

int tm_allocations_interposed(void) {
#ifdef TM_SANITIZED
    return 0;
#else
    // strdup allocates inside glibc: if that call reaches the malloc above, the process uses it.
    seen = 0;
    char *probe = strdup("x");
    free(probe);
    return seen;
#endif
}
