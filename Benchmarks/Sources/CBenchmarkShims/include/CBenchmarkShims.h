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

/// A futex ping-pong between the calling thread and a helper thread: each side stores the turn,
/// wakes the other and sleeps on the word until the turn comes back.
struct cfutex_game;

/// Starts the helper thread, and returns once it runs, so that its start is no part of a game
/// timed after it. `spins` bounded polls precede each sleep (0: park at once). NULL if the thread
/// could not start.
struct cfutex_game *cfutex_game_start(int32_t spins);

/// Plays `round_trips` round trips. Returns nanoseconds elapsed, or -1 if the helper did not
/// answer within `timeout_ns`.
int64_t cfutex_game_play(struct cfutex_game *game, int64_t round_trips, int64_t timeout_ns);

/// Stops the helper, which frees the game (it is never joined): `game` is not to be used after.
void cfutex_game_end(struct cfutex_game *game);

#endif
