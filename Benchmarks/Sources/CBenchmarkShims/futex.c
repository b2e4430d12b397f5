#define _GNU_SOURCE
#include "CBenchmarkShims.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

void cfutex_wait(uint32_t *word, uint32_t expected) {
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

void cfutex_wake_one(uint32_t *word) {
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static int64_t now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/// Shared by the two players. `turn` is 0 when the main thread may go, 1 for the helper, 2 to stop.
struct cfutex_game {
    _Atomic uint32_t turn;
    _Atomic uint32_t started;
    int32_t spins;
};

/// Waits until `turn` leaves `current`, spinning first, then sleeping on the futex with a 10 ms
/// timeout so a lost wake-up can only slow a round, never hang it.
static void await_turn_change(struct cfutex_game *game, uint32_t current) {
    for (int32_t spin = 0; spin < game->spins; spin++) {
        if (atomic_load_explicit(&game->turn, memory_order_acquire) != current) return;
    }
    struct timespec tick = {0, 10 * 1000 * 1000};
    while (atomic_load_explicit(&game->turn, memory_order_acquire) == current) {
        syscall(SYS_futex, (uint32_t *)&game->turn, FUTEX_WAIT_PRIVATE, current, &tick, NULL, 0);
    }
}

static void *helper(void *argument) {
    struct cfutex_game *game = argument;
    atomic_store_explicit(&game->started, 1, memory_order_release);
    for (;;) {
        await_turn_change(game, 0);  // wait for the ball
        if (atomic_load_explicit(&game->turn, memory_order_acquire) == 2) break;
        // Hand the ball back unless the main thread has stopped the game meanwhile (it timed out).
        uint32_t ball = 1;
        if (!atomic_compare_exchange_strong(&game->turn, &ball, 0)) break;
        syscall(SYS_futex, (uint32_t *)&game->turn, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
    free(game);
    return NULL;
}

struct cfutex_game *cfutex_game_start(int32_t spins) {
    struct cfutex_game *game = calloc(1, sizeof *game);
    game->spins = spins;
    pthread_t thread;
    if (pthread_create(&thread, NULL, helper, game) != 0) {
        free(game);
        return NULL;
    }
    pthread_detach(thread);
    while (!atomic_load_explicit(&game->started, memory_order_acquire)) sched_yield();
    return game;
}

int64_t cfutex_game_play(struct cfutex_game *game, int64_t round_trips, int64_t timeout_ns) {
    int64_t start = now_ns();
    int64_t deadline = start + timeout_ns;
    for (int64_t round = 0; round < round_trips; round++) {
        atomic_store_explicit(&game->turn, 1, memory_order_release);
        syscall(SYS_futex, (uint32_t *)&game->turn, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
        await_turn_change(game, 1);
        if (now_ns() > deadline) return -1;
    }
    return now_ns() - start;
}

void cfutex_game_end(struct cfutex_game *game) {
    atomic_store_explicit(&game->turn, 2, memory_order_release);
    syscall(SYS_futex, (uint32_t *)&game->turn, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    // the helper frees the game when it sees the stop
}
