/* Shared helpers of the C tests: checks that count failures, temp dirs, file reading. */
#ifndef KILN_TEST_COMMON_H
#define KILN_TEST_COMMON_H

#define _GNU_SOURCE
#include <kiln.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef KILN_REPO
#error "compile with -DKILN_REPO=\"/path/to/repo\" (the Makefile does)"
#endif

static int failures;

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
      failures++;                                                                   \
    }                                                                               \
  } while (0)

/* Checks that `expr` returns status `want`; on mismatch prints both names and the last error. */
#define CHECK_STATUS(expr, want)                                                     \
  do {                                                                               \
    kiln_status got_ = (expr);                                                       \
    if (got_ != (want)) {                                                            \
      kiln_error *le_ = NULL;                                                        \
      kiln_error_last(&le_);                                                         \
      fprintf(stderr, "%s:%d: %s returned %s, want %s (last error: %s)\n", __FILE__, \
              __LINE__, #expr, kiln_status_name((int32_t)got_),                      \
              kiln_status_name((int32_t)(want)),                                     \
              le_ ? kiln_error_message(le_) : "none");                               \
      kiln_error_free(&le_);                                                         \
      failures++;                                                                    \
    }                                                                                \
  } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, KILN_OK)

static inline int contains(const char *haystack, const char *needle) {
  return haystack != NULL && needle != NULL && strstr(haystack, needle) != NULL;
}

/* The message of the last failing call on this thread (static buffer, for checks). */
static inline const char *last_message(void) {
  static char buf[4096];
  kiln_error *e = NULL;
  buf[0] = '\0';
  if (kiln_error_last(&e) == KILN_OK && e != NULL) {
    snprintf(buf, sizeof buf, "%s", kiln_error_message(e));
  }
  kiln_error_free(&e);
  return buf;
}

/* A fresh temp dir; the returned string is heap-allocated. */
static inline char *make_tmpdir(void) {
  char *t = strdup("/tmp/kiln-c-XXXXXX");
  if (t == NULL || mkdtemp(t) == NULL) {
    perror("mkdtemp");
    exit(2);
  }
  return t;
}

static inline char *join(const char *a, const char *b) {
  char *p = NULL;
  if (asprintf(&p, "%s/%s", a, b) < 0) exit(2);
  return p;
}

static inline void run_or_die(const char *fmt, const char *arg) {
  char *cmd = NULL;
  if (asprintf(&cmd, fmt, arg) < 0) exit(2);
  if (system(cmd) != 0) {
    fprintf(stderr, "command failed: %s\n", cmd);
    exit(2);
  }
  free(cmd);
}

/* Builds a busybox rootfs in DIR with the shared fixture script; fails loudly without busybox. */
static inline void make_rootfs(const char *dir) {
  run_or_die(KILN_REPO "/tests/fixtures/make-rootfs '%s'", dir);
}

static inline void remove_tree(const char *dir) { run_or_die("rm -rf '%s'", dir); }

/* The whole file as a NUL-terminated heap string, or NULL if unreadable. */
static inline char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  size_t cap = 256, len = 0;
  char *buf = malloc(cap);
  size_t n;
  while (buf != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len - 1 == 0) {
      char *nb = realloc(buf, cap *= 2);
      if (nb == NULL) { free(buf); buf = NULL; }
      else buf = nb;
    }
  }
  fclose(f);
  if (buf) buf[len] = '\0';
  return buf;
}

static inline int finish(const char *name) {
  if (failures) {
    fprintf(stderr, "%s: %d check(s) FAILED\n", name, failures);
    return 1;
  }
  printf("%s: all checks passed\n", name);
  return 0;
}

#endif
