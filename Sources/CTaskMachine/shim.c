#define _GNU_SOURCE
#include "CTaskMachine.h"

#include <errno.h>
#include <pthread.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int tm_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns) {
    struct timespec timeout;
    struct timespec *timeout_pointer = NULL;
    if (timeout_ns >= 0) {
        timeout.tv_sec = (time_t)(timeout_ns / 1000000000LL);
        timeout.tv_nsec = (long)(timeout_ns % 1000000000LL);
        timeout_pointer = &timeout;
    }
    long result = syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, timeout_pointer, NULL, 0);
    return result == 0 ? 0 : errno;
}

int tm_futex_wake(uint32_t *word, int count) {
    return (int)syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

int64_t tm_current_thread_id(void) { return (int64_t)syscall(SYS_gettid); }

int64_t tm_monotonic_nanoseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
}

__thread void *tm_thread_state;

void tm_thread_state_set(void *state) { tm_thread_state = state; }

__attribute__((noinline)) uintptr_t tm_stack_address(void) {
    return (uintptr_t)__builtin_frame_address(0);
}

void tm_set_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }

// A lock in the manner of Drepper's "Futexes Are Tricky", mutex 2: 0 free, 1 held, 2 held with
// possible sleepers. The spin (about a microsecond) catches the short critical sections the
// runtime holds its locks for, before paying for a sleep and a wake-up.
void tm_lock(uint32_t *word) {
    uint32_t expected = 0;
    if (__atomic_compare_exchange_n(word, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return;
    for (int spin = 0; spin < 64; spin++) {
        tm_spin_pause();
        expected = 0;
        if (__atomic_load_n(word, __ATOMIC_RELAXED) == 0 &&
            __atomic_compare_exchange_n(word, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return;
    }
    while (__atomic_exchange_n(word, 2, __ATOMIC_ACQUIRE) != 0) {
        syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
    }
}

void tm_unlock(uint32_t *word) {
    if (__atomic_exchange_n(word, 0, __ATOMIC_RELEASE) == 2) {
        syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
}
