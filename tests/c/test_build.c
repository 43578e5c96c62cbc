/* Client-side builds through the C API (kiln_engine_build) with a real engine: inner solves, reads
 * from refs (whole, ranged, directory listings with a pattern, stats, missing paths), a second
 * graph chosen by a file's content set as the result and exported, the set-once result, failing
 * callbacks (with a code, a message, a passed-on error), refs used after their build, reads that
 * cannot escape the ref, thread rules, concurrent builds, cancellation, and no leak after 20
 * failing builds. */
#include "common.h"
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *rootfs_dir;

/* local("rootfs").run(sh -c CMD).root() */
static kiln_state *sh_graph(const char *cmd) {
  kiln_state *base = NULL, *root = NULL;
  kiln_exec *ex = NULL;
  const char *argv[] = {"/bin/sh", "-c", cmd};
  CHECK_OK(kiln_state_local("rootfs", &base));
  CHECK_OK(kiln_state_run(base, argv, 3, NULL, &ex));
  CHECK_OK(kiln_exec_root(ex, &root));
  kiln_exec_free(&ex);
  kiln_state_free(&base);
  return root;
}

static kiln_solve_opts *opts_with_rootfs(void) {
  kiln_solve_opts *o = NULL;
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_OK(kiln_solve_opts_add_local(o, "rootfs", rootfs_dir));
  return o;
}

/* Checks that `b` holds exactly `want` (`n` bytes) and frees it. */
static void check_bytes(kiln_bytes **b, const char *want, size_t n, int line) {
  size_t got = kiln_bytes_len(*b);
  if (*b == NULL || got != n || (n > 0 && memcmp(kiln_bytes_data(*b), want, n) != 0)) {
    fprintf(stderr, "test_build.c:%d: read %zu bytes \"%.*s\", want \"%s\"\n", line, got, (int)got,
            *b ? (const char *)kiln_bytes_data(*b) : "", want);
    failures++;
  }
  kiln_bytes_free(b);
}
#define CHECK_BYTES(b, want) check_bytes(&(b), (want), strlen(want), __LINE__)

/* The status and kind of a failed call's error, then frees it. */
static void check_err(kiln_error **e, kiln_status want, const char *kind, const char *needle, int line) {
  if (*e == NULL || kiln_error_status(*e) != want || (kind && strcmp(kiln_error_kind(*e), kind) != 0) ||
      (needle && !contains(kiln_error_message(*e), needle))) {
    fprintf(stderr, "test_build.c:%d: error %s (%s: %s), want %s %s containing \"%s\"\n", line,
            *e ? kiln_status_name((int32_t)kiln_error_status(*e)) : "none", *e ? kiln_error_kind(*e) : "",
            *e ? kiln_error_message(*e) : "", kiln_status_name((int32_t)want), kind ? kind : "",
            needle ? needle : "");
    failures++;
  }
  kiln_error_free(e);
}
#define CHECK_ERR(e, want, kind, needle) check_err(&(e), (want), (kind), (needle), __LINE__)

/* ---- the main build: solve, read, choose, set the result ---- */

struct side_solve {
  kiln_build_ctx *ctx;
  kiln_status status;
  char got[32];
};

/* An inner solve from a pthread of ours while the callback runs (the callback joins it). */
static void *side_thread(void *arg) {
  struct side_solve *s = arg;
  kiln_state *sc = NULL, *f = NULL;
  kiln_ref *r = NULL;
  kiln_bytes *b = NULL;
  CHECK_OK(kiln_state_scratch(&sc));
  CHECK_OK(kiln_state_mkfile(sc, "/side", 0644, (const uint8_t *)"from a thread", 13, &f));
  s->status = kiln_build_ctx_solve(s->ctx, f, &r, NULL);
  if (s->status == KILN_OK && kiln_ref_read_file(r, "/side", 0, SIZE_MAX, &b, NULL) == KILN_OK) {
    snprintf(s->got, sizeof s->got, "%.*s", (int)kiln_bytes_len(b), (const char *)kiln_bytes_data(b));
  }
  kiln_bytes_free(&b);
  kiln_ref_free(&r);
  kiln_state_free(&f);
  kiln_state_free(&sc);
  return NULL;
}

struct main_build {
  const kiln_engine *engine;
  int ran;
  kiln_ref *kept; /* a ref kept past the build, to check it is cut off */
  int warned;
  /* Set while the callback warns: the progress callback (delivered on the thread that warns)
   * tries ctx and ref calls, which are refused there. */
  kiln_build_ctx *warning_ctx;
  const kiln_ref *warning_ref;
  kiln_status warn_in_progress, read_in_progress;
};

static int main_cb(kiln_build_ctx *ctx, void *user_data) {
  struct main_build *m = user_data;
  m->ran++;
  kiln_state *first = sh_graph(
      "mkdir -p /data/sub && echo second > /choice && printf 0123456789 > /data/digits.txt && echo x > "
      "/data/notes.log && ln -s digits.txt /data/link && chmod 0640 /data/notes.log");
  kiln_ref *r = NULL;
  kiln_error *e = NULL;
  kiln_bytes *b = NULL;
  CHECK_OK(kiln_build_ctx_solve(ctx, first, &r, &e));
  kiln_state_free(&first);
  if (r == NULL) {
    kiln_build_ctx_fail_with(ctx, e);
    kiln_error_free(&e);
    return 1;
  }

  /* Whole file, then ranges. */
  CHECK_OK(kiln_ref_read_file(r, "/choice", 0, SIZE_MAX, &b, NULL));
  char choice[64] = {0};
  if (b != NULL) snprintf(choice, sizeof choice, "%.*s", (int)kiln_bytes_len(b), (const char *)kiln_bytes_data(b));
  CHECK(strcmp(choice, "second\n") == 0);
  CHECK_BYTES(b, "second\n");
  CHECK_OK(kiln_ref_read_file(r, "data/digits.txt", 3, 4, &b, NULL));
  CHECK_BYTES(b, "3456");
  CHECK_OK(kiln_ref_read_file(r, "/data/digits.txt", 8, SIZE_MAX, &b, NULL));
  CHECK_BYTES(b, "89");
  CHECK_OK(kiln_ref_read_file(r, "/data/digits.txt", 8, 100, &b, NULL));
  CHECK_BYTES(b, "89");
  CHECK_OK(kiln_ref_read_file(r, "/data/digits.txt", 50, 4, &b, NULL));
  CHECK_BYTES(b, "");
  CHECK_OK(kiln_ref_read_file(r, "/data/digits.txt", 2, 0, &b, NULL));
  CHECK_BYTES(b, "");
  CHECK_OK(kiln_ref_read_file(r, "/data/link", 0, SIZE_MAX, &b, NULL));
  CHECK_BYTES(b, "0123456789");

  /* Directory listings: with a pattern, then everything. */
  kiln_dir_entries *d = NULL;
  CHECK_OK(kiln_ref_read_dir(r, "/data", "*.txt", &d, NULL));
  CHECK(kiln_dir_entries_len(d) == 1);
  const kiln_file_stat *s0 = kiln_dir_entries_get(d, 0);
  CHECK(s0 != NULL && strcmp(kiln_file_stat_name(s0), "digits.txt") == 0);
  CHECK(kiln_file_stat_size(s0) == 10);
  CHECK(S_ISREG(kiln_file_stat_mode(s0)));
  CHECK(kiln_file_stat_mtime_ns(s0) > INT64_C(1000000000000000000));
  CHECK(kiln_file_stat_link_target(s0) == NULL);
  CHECK(kiln_dir_entries_get(d, 1) == NULL);
  kiln_dir_entries_free(&d);
  CHECK(d == NULL);
  CHECK_OK(kiln_ref_read_dir(r, "/data", NULL, &d, NULL));
  CHECK(kiln_dir_entries_len(d) == 4);
  if (kiln_dir_entries_len(d) == 4) {
    const char *names[] = {"digits.txt", "link", "notes.log", "sub"};
    for (size_t i = 0; i < 4; i++) CHECK(strcmp(kiln_file_stat_name(kiln_dir_entries_get(d, i)), names[i]) == 0);
    const kiln_file_stat *link = kiln_dir_entries_get(d, 1);
    CHECK(S_ISLNK(kiln_file_stat_mode(link)));
    CHECK(contains(kiln_file_stat_link_target(link), "digits.txt"));
    CHECK((kiln_file_stat_mode(kiln_dir_entries_get(d, 2)) & 07777) == 0640);
    CHECK(kiln_file_stat_uid(kiln_dir_entries_get(d, 2)) == 0 && kiln_file_stat_gid(kiln_dir_entries_get(d, 2)) == 0);
    CHECK(S_ISDIR(kiln_file_stat_mode(kiln_dir_entries_get(d, 3))));
    CHECK(kiln_file_stat_size(kiln_dir_entries_get(d, 3)) == 0);
  }
  kiln_dir_entries_free(&d);
  CHECK_OK(kiln_ref_read_dir(r, "/data", "", &d, NULL));
  CHECK(kiln_dir_entries_len(d) == 4);
  kiln_dir_entries_free(&d);

  /* Stats; missing paths have their own status. */
  kiln_file_stat *st = NULL;
  CHECK_OK(kiln_ref_stat_file(r, "/data/notes.log", &st, NULL));
  CHECK(st != NULL && strcmp(kiln_file_stat_name(st), "notes.log") == 0 && kiln_file_stat_size(st) == 2);
  kiln_file_stat_free(&st);
  CHECK(st == NULL);
  CHECK_STATUS(kiln_ref_stat_file(r, "/data/nope", &st, &e), KILN_ERR_NOT_FOUND);
  CHECK(st == NULL);
  CHECK_ERR(e, KILN_ERR_NOT_FOUND, "not_found", "/data/nope");
  CHECK_STATUS(kiln_ref_read_file(r, "/nope/deeper", 0, SIZE_MAX, &b, &e), KILN_ERR_NOT_FOUND);
  CHECK(b == NULL);
  CHECK_ERR(e, KILN_ERR_NOT_FOUND, "not_found", NULL);
  CHECK_STATUS(kiln_ref_read_dir(r, "/nope", NULL, &d, &e), KILN_ERR_NOT_FOUND);
  CHECK_ERR(e, KILN_ERR_NOT_FOUND, "not_found", NULL);
  CHECK_STATUS(kiln_ref_read_file(r, "/data", 0, SIZE_MAX, &b, &e), KILN_ERR_FILE_OP);
  CHECK_ERR(e, KILN_ERR_FILE_OP, "file_op", "is a directory");
  CHECK_OK(kiln_ref_evaluate(r, NULL));

  /* Thread rules: an inner solve from our own pthread; blocking engine calls are refused here. */
  struct side_solve side = {ctx, KILN_ERR_INTERNAL, {0}};
  pthread_t t;
  CHECK(pthread_create(&t, NULL, side_thread, &side) == 0);
  pthread_join(t, NULL);
  CHECK_OK(side.status);
  CHECK(strcmp(side.got, "from a thread") == 0);
  {
    kiln_state *sc = NULL;
    kiln_result *res = NULL;
    CHECK_OK(kiln_state_scratch(&sc));
    CHECK_STATUS(kiln_engine_solve(m->engine, sc, NULL, &res, NULL), KILN_ERR_WRONG_THREAD);
    CHECK_STATUS(kiln_engine_build(m->engine, NULL, main_cb, m, &res, NULL), KILN_ERR_WRONG_THREAD);
    CHECK(res == NULL);
    kiln_state_free(&sc);
  }

  m->warning_ctx = ctx;
  m->warning_ref = r;
  CHECK_OK(kiln_build_ctx_warn(ctx, "first-graph", "chose the second graph from /choice"));
  m->warning_ctx = NULL;
  m->warning_ref = NULL;
  CHECK_STATUS(m->warn_in_progress, KILN_ERR_WRONG_THREAD);
  CHECK_STATUS(m->read_in_progress, KILN_ERR_WRONG_THREAD);
  CHECK_STATUS(kiln_build_ctx_warn(ctx, NULL, "x"), KILN_ERR_NULL_ARGUMENT);

  /* The second graph, chosen by the file's content, becomes the result: once. */
  char cmd[128];
  choice[strcspn(choice, "\n")] = '\0';
  snprintf(cmd, sizeof cmd, "echo chosen-%s > /result", choice);
  kiln_state *second = sh_graph(cmd);
  kiln_ref *r2 = NULL;
  CHECK_OK(kiln_build_ctx_solve(ctx, second, &r2, NULL));
  CHECK_OK(kiln_build_ctx_set_result(ctx, r2, NULL));
  CHECK_STATUS(kiln_build_ctx_set_result(ctx, r, &e), KILN_ERR_DEFINITION);
  CHECK_ERR(e, KILN_ERR_DEFINITION, "definition", "result already set");
  CHECK_STATUS(kiln_build_ctx_set_result_state(ctx, second, &e), KILN_ERR_DEFINITION);
  CHECK_ERR(e, KILN_ERR_DEFINITION, "definition", "result already set");
  kiln_state_free(&second);
  kiln_ref_free(&r2);
  CHECK(r2 == NULL);
  kiln_ref_free(&r2); /* a second free through the same variable is a no-op */
  m->kept = r;        /* freed by main after the build */
  return 0;
}

static void on_progress(const kiln_progress_event *ev, void *userdata) {
  struct main_build *m = userdata;
  if (ev->kind != KILN_PROGRESS_WARNING || !contains(ev->message, "first-graph: chose the second graph")) return;
  m->warned++;
  if (m->warning_ctx != NULL) {
    kiln_bytes *b = NULL;
    m->warn_in_progress = kiln_build_ctx_warn(m->warning_ctx, "progress", "nested");
    m->read_in_progress = kiln_ref_read_file(m->warning_ref, "/choice", 0, SIZE_MAX, &b, NULL);
    kiln_bytes_free(&b);
  }
}

static void main_build(const kiln_engine *engine, const char *tmp) {
  char *out = join(tmp, "out");
  char *csv = NULL;
  if (asprintf(&csv, "type=local,dest=%s", out) < 0) exit(2);
  kiln_solve_opts *o = opts_with_rootfs();
  struct main_build m = {engine, 0, NULL, 0, NULL, NULL, KILN_OK, KILN_OK};
  CHECK_OK(kiln_solve_opts_add_output(o, csv));
  CHECK_OK(kiln_solve_opts_set_progress(o, on_progress, &m));
  kiln_result *res = NULL;
  kiln_error *e = NULL;
  CHECK_OK(kiln_engine_build(engine, o, main_cb, &m, &res, &e));
  if (e != NULL) fprintf(stderr, "main build: %s\n", kiln_error_message(e));
  kiln_error_free(&e);
  CHECK(m.ran == 1);
  CHECK(res != NULL && kiln_result_executed(res) >= 2);
  CHECK(m.warned == 1);
  char *result = join(out, "result");
  char *got = read_file(result);
  CHECK(got != NULL && strcmp(got, "chosen-second\n") == 0);
  free(got);
  free(result);

  /* The ref kept past the build is cut off: a clear error, then freed. */
  kiln_bytes *b = NULL;
  kiln_file_stat *st = NULL;
  kiln_dir_entries *d = NULL;
  CHECK(m.kept != NULL);
  CHECK_STATUS(kiln_ref_read_file(m.kept, "/choice", 0, SIZE_MAX, &b, &e), KILN_ERR_UNSUPPORTED);
  CHECK(b == NULL);
  CHECK_ERR(e, KILN_ERR_UNSUPPORTED, "unsupported", "build of this ref has ended");
  CHECK_STATUS(kiln_ref_stat_file(m.kept, "/choice", &st, NULL), KILN_ERR_UNSUPPORTED);
  CHECK_STATUS(kiln_ref_read_dir(m.kept, "/", NULL, &d, NULL), KILN_ERR_UNSUPPORTED);
  CHECK_STATUS(kiln_ref_evaluate(m.kept, NULL), KILN_ERR_UNSUPPORTED);
  kiln_ref_free(&m.kept);
  CHECK(m.kept == NULL);

  kiln_result_free(&res);
  kiln_solve_opts_free(&o);
  free(csv);
  free(out);
}

/* ---- failing callbacks ---- */

enum how { RETURN_CODE, FAIL_MESSAGE, FAIL_WITH_ERROR, FAIL_THEN_ZERO, FOREIGN_REF, SOLVE_FAILS };

struct failing {
  enum how how;
  kiln_ref *foreign; /* a ref of an ended build */
};

static int failing_cb(kiln_build_ctx *ctx, void *user_data) {
  struct failing *f = user_data;
  kiln_error *e = NULL;
  kiln_ref *r = NULL;
  kiln_state *sc = NULL, *g = NULL;
  int rc = 0;
  CHECK_OK(kiln_state_scratch(&sc));
  CHECK_OK(kiln_state_mkfile(sc, "/f", 0644, (const uint8_t *)"f", 1, &g));
  CHECK_OK(kiln_build_ctx_solve(ctx, g, &r, NULL));
  switch (f->how) {
    case RETURN_CODE: rc = 7; break;
    case FAIL_MESSAGE:
      CHECK_OK(kiln_build_ctx_fail(ctx, "no lockfile in the checkout"));
      rc = 3;
      break;
    case FAIL_WITH_ERROR: {
      kiln_bytes *b = NULL;
      CHECK_STATUS(kiln_ref_read_file(r, "/lockfile", 0, SIZE_MAX, &b, &e), KILN_ERR_NOT_FOUND);
      CHECK_OK(kiln_build_ctx_fail_with(ctx, e));
      kiln_error_free(&e);
      rc = 1;
      break;
    }
    case FAIL_THEN_ZERO: CHECK_OK(kiln_build_ctx_fail(ctx, "failed, returned 0")); break;
    case FOREIGN_REF:
      if (f->foreign != NULL) {
        CHECK_STATUS(kiln_build_ctx_set_result(ctx, f->foreign, &e), KILN_ERR_INVALID_ARGUMENT);
        CHECK_ERR(e, KILN_ERR_INVALID_ARGUMENT, "invalid_argument", "another build");
        kiln_ref_free(&f->foreign);
      }
      CHECK_OK(kiln_build_ctx_set_result(ctx, r, NULL));
      f->foreign = r; /* kept past this build */
      r = NULL;
      break;
    case SOLVE_FAILS: {
      kiln_state *bad = sh_graph("echo failing on purpose >&2; exit 42");
      kiln_ref *r2 = NULL;
      CHECK_STATUS(kiln_build_ctx_solve(ctx, bad, &r2, &e), KILN_ERR_EXEC);
      CHECK(r2 == NULL);
      CHECK(kiln_error_exit_code(e) == 42);
      kiln_build_ctx_fail_with(ctx, e);
      kiln_error_free(&e);
      kiln_state_free(&bad);
      rc = 1;
      break;
    }
  }
  kiln_ref_free(&r);
  kiln_state_free(&g);
  kiln_state_free(&sc);
  return rc;
}

static void failing_builds(const kiln_engine *engine) {
  kiln_solve_opts *o = opts_with_rootfs();
  kiln_result *res = NULL;
  kiln_error *e = NULL;
  struct failing f = {RETURN_CODE, NULL};

  CHECK_STATUS(kiln_engine_build(engine, o, failing_cb, &f, &res, &e), KILN_ERR_CALLBACK);
  CHECK(res == NULL);
  CHECK(kiln_error_exit_code(e) == 7);
  CHECK_ERR(e, KILN_ERR_CALLBACK, "callback", "failed with code 7");

  f.how = FAIL_MESSAGE;
  CHECK_STATUS(kiln_engine_build(engine, o, failing_cb, &f, &res, &e), KILN_ERR_CALLBACK);
  CHECK(kiln_error_exit_code(e) == 3);
  CHECK_ERR(e, KILN_ERR_CALLBACK, "callback", "no lockfile in the checkout");
  CHECK(contains(last_message(), "no lockfile in the checkout"));

  f.how = FAIL_WITH_ERROR;
  CHECK_STATUS(kiln_engine_build(engine, o, failing_cb, &f, &res, &e), KILN_ERR_NOT_FOUND);
  CHECK_ERR(e, KILN_ERR_NOT_FOUND, "not_found", "/lockfile");

  f.how = FAIL_THEN_ZERO;
  CHECK_STATUS(kiln_engine_build(engine, o, failing_cb, &f, &res, &e), KILN_ERR_CALLBACK);
  CHECK(kiln_error_exit_code(e) == 0);
  CHECK_ERR(e, KILN_ERR_CALLBACK, "callback", "failed, returned 0");

  f.how = SOLVE_FAILS;
  CHECK_STATUS(kiln_engine_build(engine, o, failing_cb, &f, &res, &e), KILN_ERR_EXEC);
  CHECK(kiln_error_exit_code(e) == 42);
  CHECK(kiln_error_log_tail_len(e) >= 1);
  CHECK_ERR(e, KILN_ERR_EXEC, "exec", NULL);

  /* A ref of one build is not another build's result; then that ref outlives its build. */
  f.how = FOREIGN_REF;
  CHECK_OK(kiln_engine_build(engine, o, failing_cb, &f, &res, NULL));
  kiln_result_free(&res);
  CHECK(f.foreign != NULL);
  CHECK_OK(kiln_engine_build(engine, o, failing_cb, &f, &res, NULL));
  kiln_result_free(&res);
  kiln_ref_free(&f.foreign);

  /* Misuse. */
  CHECK_STATUS(kiln_engine_build(engine, o, NULL, NULL, &res, &e), KILN_ERR_NULL_ARGUMENT);
  CHECK_ERR(e, KILN_ERR_NULL_ARGUMENT, "null_argument", "callback");
  CHECK_STATUS(kiln_engine_build(NULL, o, failing_cb, &f, &res, NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_engine_build(engine, o, failing_cb, &f, NULL, NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_ref_read_file(NULL, "/", 0, SIZE_MAX, NULL, NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_ref_evaluate(NULL, NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_build_ctx_fail(NULL, "x"), KILN_ERR_NULL_ARGUMENT);
  CHECK(kiln_dir_entries_len(NULL) == 0 && kiln_dir_entries_get(NULL, 0) == NULL);
  CHECK(kiln_file_stat_name(NULL) == NULL && kiln_file_stat_link_target(NULL) == NULL);
  kiln_ref_free(NULL);
  kiln_file_stat_free(NULL);
  kiln_dir_entries_free(NULL);
  CHECK(strcmp(kiln_status_name(KILN_ERR_NOT_FOUND), "KILN_ERR_NOT_FOUND") == 0);
  CHECK(strcmp(kiln_status_name(KILN_ERR_CALLBACK), "KILN_ERR_CALLBACK") == 0);
  kiln_solve_opts_free(&o);
}

/* ---- reads stay inside the ref ---- */

static int escape_cb(kiln_build_ctx *ctx, void *user_data) {
  (void)user_data;
  int host_hostname = access("/etc/hostname", F_OK) == 0;
  kiln_state *g = sh_graph(
      "echo inside > /etc/marker && rm -f /etc/hostname && ln -s /etc /escape && ln -s ../../../../../etc /rel && "
      "mkdir -p /a/b");
  kiln_ref *r = NULL;
  kiln_bytes *b = NULL;
  kiln_file_stat *st = NULL;
  kiln_dir_entries *d = NULL;
  CHECK_OK(kiln_build_ctx_solve(ctx, g, &r, NULL));
  const char *inside[] = {"/escape/marker", "/rel/marker", "/a/b/../../../../../../etc/marker", "../../etc/marker"};
  for (size_t i = 0; i < 4; i++) {
    CHECK_OK(kiln_ref_read_file(r, inside[i], 0, SIZE_MAX, &b, NULL));
    CHECK_BYTES(b, "inside\n");
  }
  if (host_hostname) {
    const char *outside[] = {"/escape/hostname", "/rel/hostname", "../../../etc/hostname", "/a/../../etc/hostname"};
    for (size_t i = 0; i < 4; i++) {
      CHECK_STATUS(kiln_ref_read_file(r, outside[i], 0, SIZE_MAX, &b, NULL), KILN_ERR_NOT_FOUND);
      CHECK_STATUS(kiln_ref_stat_file(r, outside[i], &st, NULL), KILN_ERR_NOT_FOUND);
    }
  }
  CHECK_OK(kiln_ref_read_dir(r, "/escape", NULL, &d, NULL));
  int marker = 0, passwd = 0, hostname = 0;
  for (size_t i = 0; i < kiln_dir_entries_len(d); i++) {
    const char *n = kiln_file_stat_name(kiln_dir_entries_get(d, i));
    marker += strcmp(n, "marker") == 0;
    passwd += strcmp(n, "passwd") == 0;
    hostname += strcmp(n, "hostname") == 0;
  }
  CHECK(marker == 1 && passwd == 1 && hostname == 0);
  kiln_dir_entries_free(&d);
  CHECK_OK(kiln_ref_stat_file(r, "/../..", &st, NULL));
  CHECK(st != NULL && S_ISDIR(kiln_file_stat_mode(st)));
  kiln_file_stat_free(&st);
  CHECK_OK(kiln_ref_read_dir(r, "/", "escape", &d, NULL));
  CHECK(kiln_dir_entries_len(d) == 1);
  CHECK(contains(kiln_file_stat_link_target(kiln_dir_entries_get(d, 0)), "/etc"));
  CHECK(S_ISLNK(kiln_file_stat_mode(kiln_dir_entries_get(d, 0))));
  kiln_dir_entries_free(&d);
  kiln_ref_free(&r);
  kiln_state_free(&g);
  return 0;
}

/* ---- cancelling a build while its callback waits on an inner solve ---- */

struct cancelled {
  kiln_cancel_token *token;
  kiln_status inner;       /* what the inner solve returned */
  kiln_status after;       /* a solve started after the cancel */
  int returned;            /* the callback has returned */
};

static void cancel_on_start(const kiln_progress_event *ev, void *userdata) {
  struct cancelled *c = userdata;
  if (ev->kind == KILN_PROGRESS_LOG && ev->data_len >= 5 && memmem(ev->data, ev->data_len, "begin", 5) != NULL) {
    kiln_cancel_token_cancel(c->token);
  }
}

static int cancelled_cb(kiln_build_ctx *ctx, void *user_data) {
  struct cancelled *c = user_data;
  kiln_state *slow = sh_graph("echo begin; exec sleep 1000");
  kiln_state *sc = NULL;
  kiln_ref *r = NULL;
  c->inner = kiln_build_ctx_solve(ctx, slow, &r, NULL);
  CHECK(r == NULL);
  CHECK_OK(kiln_state_scratch(&sc));
  c->after = kiln_build_ctx_solve(ctx, sc, &r, NULL);
  CHECK(r == NULL);
  kiln_state_free(&sc);
  kiln_state_free(&slow);
  c->returned = 1;
  return 1;
}

static int mounts_of(const char *root);

static void cancelled_build(const kiln_engine *engine, const char *root) {
  struct cancelled c = {NULL, KILN_OK, KILN_OK, 0};
  kiln_solve_opts *o = opts_with_rootfs();
  kiln_result *res = NULL;
  kiln_error *e = NULL;
  int mounts0 = mounts_of(root);
  CHECK_OK(kiln_cancel_token_new(&c.token));
  CHECK_OK(kiln_solve_opts_set_cancel(o, c.token));
  CHECK_OK(kiln_solve_opts_set_progress(o, cancel_on_start, &c));
  CHECK_STATUS(kiln_engine_build(engine, o, cancelled_cb, &c, &res, &e), KILN_ERR_CANCELLED);
  CHECK_ERR(e, KILN_ERR_CANCELLED, "cancelled", NULL);
  /* The callback returned before kiln_engine_build did; its solves failed. */
  CHECK(c.returned == 1);
  CHECK(c.inner != KILN_OK && c.after != KILN_OK);
  CHECK(mounts_of(root) == mounts0);
  /* A build with an already cancelled token never runs its callback. */
  c.returned = 0;
  CHECK_STATUS(kiln_engine_build(engine, o, cancelled_cb, &c, &res, NULL), KILN_ERR_CANCELLED);
  CHECK(c.returned == 0);
  kiln_cancel_token_free(&c.token);
  kiln_solve_opts_free(&o);
}

/* ---- concurrent builds, each setting a state as its result ---- */

struct concurrent {
  const kiln_engine *engine;
  const char *tmp;
  int i;
  kiln_status status;
};

static int concurrent_cb(kiln_build_ctx *ctx, void *user_data) {
  struct concurrent *c = user_data;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "cat /s > /own && echo own-%d >> /own", c->i);
  kiln_state *shared = sh_graph("echo shared > /s");
  kiln_state *own = NULL;
  kiln_exec *ex = NULL;
  const char *argv[] = {"/bin/sh", "-c", cmd};
  kiln_ref *r = NULL;
  kiln_bytes *b = NULL;
  CHECK_OK(kiln_build_ctx_solve(ctx, shared, &r, NULL));
  CHECK_OK(kiln_ref_read_file(r, "/s", 0, SIZE_MAX, &b, NULL));
  CHECK_BYTES(b, "shared\n");
  CHECK_OK(kiln_state_run(shared, argv, 3, NULL, &ex));
  CHECK_OK(kiln_exec_root(ex, &own));
  CHECK_OK(kiln_build_ctx_set_result_state(ctx, own, NULL));
  kiln_ref_free(&r);
  kiln_state_free(&own);
  kiln_exec_free(&ex);
  kiln_state_free(&shared);
  return 0;
}

static void *concurrent_thread(void *arg) {
  struct concurrent *c = arg;
  char name[32], *out = NULL, *csv = NULL;
  snprintf(name, sizeof name, "out-%d", c->i);
  out = join(c->tmp, name);
  if (asprintf(&csv, "type=local,dest=%s", out) < 0) exit(2);
  kiln_solve_opts *o = opts_with_rootfs();
  kiln_result *res = NULL;
  CHECK_OK(kiln_solve_opts_add_output(o, csv));
  c->status = kiln_engine_build(c->engine, o, concurrent_cb, c, &res, NULL);
  char *own = join(out, "own");
  char *got = read_file(own);
  char want[32];
  snprintf(want, sizeof want, "shared\nown-%d\n", c->i);
  CHECK(got != NULL && strcmp(got, want) == 0);
  free(got);
  free(own);
  kiln_result_free(&res);
  kiln_solve_opts_free(&o);
  free(csv);
  free(out);
  return NULL;
}

static void concurrent_builds(const kiln_engine *engine, const char *tmp) {
  enum { N = 6 };
  struct concurrent c[N];
  pthread_t t[N];
  for (int i = 0; i < N; i++) {
    c[i] = (struct concurrent){engine, tmp, i, KILN_ERR_INTERNAL};
    CHECK(pthread_create(&t[i], NULL, concurrent_thread, &c[i]) == 0);
  }
  for (int i = 0; i < N; i++) {
    pthread_join(t[i], NULL);
    CHECK_OK(c[i].status);
  }
}

/* ---- no leak after failing builds ---- */

/* How many mounts of this process's namespace mention `root`. */
static int mounts_of(const char *root) {
  int n = 0;
  char line[8192];
  FILE *f = fopen("/proc/self/mountinfo", "r");
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f) != NULL) n += strstr(line, root) != NULL;
  fclose(f);
  return n;
}

/* How many snapshot directories the engine root holds (ROOT/snapshots/KIND/ID and below, 3 deep). */
static int snapshot_entries(const char *root) {
  char *cmd = NULL;
  int n = -1;
  if (asprintf(&cmd, "find '%s/snapshots' -mindepth 1 -maxdepth 3 | wc -l", root) < 0) exit(2);
  FILE *p = popen(cmd, "r");
  if (p != NULL) {
    if (fscanf(p, "%d", &n) != 1) n = -1;
    pclose(p);
  }
  free(cmd);
  return n;
}

/* How many containers runc still knows under the engine root (its state dirs). */
static int runc_containers(const char *root) {
  char *dir = join(root, "runtime/runc");
  int n = 0;
  DIR *d = opendir(dir);
  if (d != NULL) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    closedir(d);
  }
  free(dir);
  return n;
}

struct leak {
  const char *root;
  int i;
  int view_mounted;
  kiln_ref *kept; /* odd builds keep their ref past the build: its release must not wait for it */
};

static int leak_cb(kiln_build_ctx *ctx, void *user_data) {
  struct leak *l = user_data;
  kiln_state *g = sh_graph("echo leak-check > /f");
  kiln_ref *r = NULL;
  kiln_bytes *b = NULL;
  kiln_dir_entries *d = NULL;
  CHECK_OK(kiln_build_ctx_solve(ctx, g, &r, NULL));
  CHECK_OK(kiln_ref_read_file(r, "/f", 0, SIZE_MAX, &b, NULL));
  CHECK_BYTES(b, "leak-check\n");
  CHECK_OK(kiln_ref_read_dir(r, "/", "f", &d, NULL));
  CHECK(kiln_dir_entries_len(d) == 1);
  kiln_dir_entries_free(&d);
  /* The ref's read-only view is mounted while the build runs (so its release counts). */
  l->view_mounted += mounts_of(l->root) > 0;
  char msg[64];
  snprintf(msg, sizeof msg, "build %d fails on purpose", l->i);
  kiln_build_ctx_fail(ctx, msg);
  if (l->i % 2 == 0) {
    kiln_ref_free(&r);
  } else {
    l->kept = r;
  }
  kiln_state_free(&g);
  return 1;
}

static void no_leaks(const kiln_engine *engine, const char *root) {
  kiln_solve_opts *o = opts_with_rootfs();
  kiln_state *g = sh_graph("echo leak-check > /f");
  kiln_result *res = NULL;
  CHECK_OK(kiln_engine_solve(engine, g, o, &res, NULL));
  kiln_result_free(&res);
  kiln_state_free(&g);
  size_t records0 = 0, records1 = 0;
  uint64_t bytes0 = 0, bytes1 = 0;
  CHECK_OK(kiln_engine_disk_usage(engine, &records0, &bytes0, NULL));
  int mounts0 = mounts_of(root), snaps0 = snapshot_entries(root), containers0 = runc_containers(root);
  CHECK(snaps0 > 0);
  struct leak l = {root, 0, 0, NULL};
  for (l.i = 0; l.i < 20; l.i++) {
    kiln_error *e = NULL;
    char want[64];
    snprintf(want, sizeof want, "build %d fails on purpose", l.i);
    CHECK_STATUS(kiln_engine_build(engine, o, leak_cb, &l, &res, &e), KILN_ERR_CALLBACK);
    CHECK_ERR(e, KILN_ERR_CALLBACK, "callback", want);
    CHECK(mounts_of(root) == mounts0);
    CHECK(snapshot_entries(root) == snaps0);
    CHECK(runc_containers(root) == containers0);
    kiln_ref_free(&l.kept);
  }
  CHECK(l.view_mounted == 20);
  CHECK_OK(kiln_engine_disk_usage(engine, &records1, &bytes1, NULL));
  CHECK(records1 == records0 && bytes1 == bytes0);
  kiln_solve_opts_free(&o);
}

int main(void) {
  char *tmp = make_tmpdir();
  char *rootfs = join(tmp, "rootfs");
  char *root = join(tmp, "root");
  make_rootfs(rootfs);
  rootfs_dir = rootfs;
  kiln_engine *e = NULL;
  CHECK_OK(kiln_engine_open(root, &e));

  main_build(e, tmp);
  failing_builds(e);
  {
    kiln_solve_opts *o = opts_with_rootfs();
    kiln_result *res = NULL;
    CHECK_OK(kiln_engine_build(e, o, escape_cb, NULL, &res, NULL));
    kiln_result_free(&res);
    kiln_solve_opts_free(&o);
  }
  concurrent_builds(e, tmp);
  cancelled_build(e, root);
  no_leaks(e, root);

  kiln_engine_free(&e);
  remove_tree(tmp);
  free(root);
  free(rootfs);
  free(tmp);
  return finish("test_build");
}
