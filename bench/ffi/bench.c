/* C face of bench/ffi: the 1,000-step file chain solved cold once on ROOT, then re-solved fully
 * cached in a new engine on ROOT 5 times; prints `c <median ms>`.
 *
 *   cc -O2 bench.c -I include -L target/release -lkiln_capi -o bench && ./bench ROOT */
#define _POSIX_C_SOURCE 200809L
#include <kiln.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STEPS 1000
#define RUNS 5

static void check(kiln_status s, const char *what) {
  if (s == KILN_OK) return;
  kiln_error *e = NULL;
  kiln_error_last(&e);
  fprintf(stderr, "%s: %s: %s\n", what, kiln_status_name((int32_t)s), e ? kiln_error_message(e) : "?");
  kiln_error_free(&e);
  exit(1);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* A custom name ends the chain of file actions: every step is its own vertex. */
static kiln_state *graph(void) {
  kiln_state *st = NULL;
  check(kiln_state_scratch(&st), "scratch");
  for (int i = 0; i < STEPS; i++) {
    char path[32], data[16], name[32];
    kiln_state *f = NULL, *named = NULL;
    snprintf(path, sizeof path, "/f%d", i);
    int n = snprintf(data, sizeof data, "%d", i);
    snprintf(name, sizeof name, "step %d", i);
    check(kiln_state_mkfile(st, path, 0644, (const uint8_t *)data, (size_t)n, &f), "mkfile");
    check(kiln_state_with_custom_name(f, name, &named), "with_custom_name");
    kiln_state_free(&f);
    kiln_state_free(&st);
    st = named;
  }
  return st;
}

static size_t solve(const char *root, const kiln_state *st, double *ms) {
  kiln_engine *e = NULL;
  kiln_result *r = NULL;
  check(kiln_engine_open(root, &e), "open");
  double t = now_ms();
  check(kiln_engine_solve(e, st, NULL, &r, NULL), "solve");
  if (ms) *ms = now_ms() - t;
  size_t executed = kiln_result_executed(r);
  kiln_result_free(&r);
  kiln_engine_free(&e);
  return executed;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s ROOT\n", argv[0]);
    return 2;
  }
  kiln_state *st = graph();
  if (solve(argv[1], st, NULL) != STEPS) {
    fprintf(stderr, "cold solve did not execute %d steps\n", STEPS);
    return 1;
  }
  double times[RUNS];
  for (int i = 0; i < RUNS; i++) {
    if (solve(argv[1], st, &times[i]) != 0) {
      fprintf(stderr, "cached solve executed steps\n");
      return 1;
    }
  }
  qsort(times, RUNS, sizeof times[0], cmp);
  printf("c %.1f\n", times[RUNS / 2]);
  kiln_state_free(&st);
  return 0;
}
