#ifndef C_BENCHMARK_SHIMS_H
#define C_BENCHMARK_SHIMS_H

#include <stddef.h>
#include <stdint.h>

/// Bytes the C heap has handed out and not taken back: glibc's mallinfo2() small blocks in use plus
/// mmapped ones. Not visible to Swift through Glibc, hence this shim.
size_t cbench_heap_bytes_in_use(void);

/// Allocations made and not freed since the malloc-counting interposer's counters were last reset
/// (counted only while it is hooked); -1 without the interposer.
int64_t cbench_live_allocations(void);

/// Sleeps while `*word == expected` (FUTEX_WAIT_PRIVATE); returns at once if it differs.
void cfutex_wait(uint32_t *word, uint32_t expected);

/// Wakes one thread sleeping on `word` (FUTEX_WAKE_PRIVATE).
void cfutex_wake_one(uint32_t *word);

/// Runs `round_trips` futex ping-pongs between the calling thread and a helper thread it starts:
/// each side stores the turn, wakes the other and sleeps on the word until the turn comes back.
/// `spins` bounded polls precede each sleep (0: park at once). Returns nanoseconds elapsed, or -1
/// if the helper did not answer within `timeout_ns` (the helper is then abandoned, never joined).
int64_t cfutex_ping_pong(int64_t round_trips, int32_t spins, int64_t timeout_ns);

#endif
