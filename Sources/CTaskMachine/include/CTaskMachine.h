// The few Linux facilities Swift cannot reach directly: the futex system call (syscall() is
// variadic, so Swift cannot call it), 32-bit atomics on raw memory that a futex can wait on, a
// CPU pause hint for spin loops, and one thread-local pointer that is cheaper than pthread keys.
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Blocks while `*word == expected`, at most `timeout_ns` nanoseconds (negative: no limit).
/// Returns 0 when woken, else the errno: EAGAIN when the value already differed, ETIMEDOUT, EINTR.
int tm_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns);

/// Wakes up to `count` threads blocked on `word`; returns how many woke.
int tm_futex_wake(uint32_t *word, int count);

/// Acquires a futex lock word (0 free, 1 held, 2 held with sleepers): a compare-exchange when
/// free, a short spin, then sleeping in the kernel. Kept out of line in C so that sanitizers see
/// every acquire and release as atomic operations on the word.
void tm_lock(uint32_t *word);

/// Releases a lock taken with `tm_lock`, waking one sleeper if there is one.
void tm_unlock(uint32_t *word);

/// The kernel's id of the calling thread.
int64_t tm_current_thread_id(void);

/// Names the calling thread for debuggers and `top` (at most 15 bytes are kept).
void tm_set_thread_name(const char *name);

/// Nanoseconds on CLOCK_MONOTONIC.
int64_t tm_monotonic_nanoseconds(void);

/// The calling thread's runtime state (an unretained pointer), or NULL. Defined in shim.c; read
/// through the inline getter, which compiles to one thread-local load where a call cost about 10
/// instructions, and every continuation reads it once or twice.
extern __thread void *tm_thread_state;

/// The calling thread's runtime state (an unretained pointer), or NULL.
static inline void *tm_thread_state_get(void) { return tm_thread_state; }

void tm_thread_state_set(void *state);

/// Asks for the cache line at `address` ahead of a write to it: a hint, which never faults.
/// `prefetchw` on x86-64 (processors without it run it as a no-op), where the compiler's builtin
/// makes a read prefetch unless told the processor has it.
static inline void tm_prefetch_for_writing(const void *address) {
#if defined(__x86_64__)
    __asm__ volatile("prefetchw %0" : : "m"(*(const char *)address));
#else
    __builtin_prefetch(address, 1, 3);
#endif
}

/// Approximate address of the calling frame, for measuring stack depth.
uintptr_t tm_stack_address(void);

static inline uint32_t tm_atomic_load_u32(uint32_t *word) {
    return __atomic_load_n(word, __ATOMIC_ACQUIRE);
}

static inline uint32_t tm_atomic_exchange_u32(uint32_t *word, uint32_t value) {
    return __atomic_exchange_n(word, value, __ATOMIC_ACQ_REL);
}

static inline int tm_atomic_compare_exchange_u32(uint32_t *word, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(word, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static inline void tm_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#ifdef __cplusplus
}
#endif
