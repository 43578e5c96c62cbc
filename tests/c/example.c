/* example.c: build a small graph with kiln's C API, export its cache, and re-import that cache
 * in a fresh engine root so nothing runs the second time.
 *
 *   usage: example ROOTFS CTX WORKDIR
 *     ROOTFS   a directory with a busybox root filesystem (tests/fixtures/make-rootfs makes one)
 *     CTX      a directory holding hello.txt
 *     WORKDIR  an empty scratch directory (engine roots, cache, outputs go here)
 *
 * Build: cc example.c $(pkg-config --cflags --libs kiln) -o example   (run as root: runc) */
#include <kiln.h>
#include <stdio.h>
#include <stdlib.h>

/* Prints the failed call's error and exits. */
static void check(kiln_status s, const char *what) {
  if (s == KILN_OK) return;
  kiln_error *e = NULL;
  kiln_error_last(&e);
  fprintf(stderr, "%s failed: %s: %s\n", what, kiln_status_name((int32_t)s), e ? kiln_error_message(e) : "?");
  kiln_error_free(&e);
  exit(1);
}

static void on_progress(const kiln_progress_event *ev, void *userdata) {
  (void)userdata;
  if (ev->kind == KILN_PROGRESS_VERTEX_STARTED) printf("  running  %s\n", ev->name);
  if (ev->kind == KILN_PROGRESS_VERTEX_CACHED) printf("  cached   %s\n", ev->name);
}

/* Solves `app` in a new engine root `root` with one extra cache option. */
static size_t build(const kiln_state *app, const char *rootfs, const char *ctx, const char *root,
                    const char *out, const char *cache_csv, int export_cache) {
  kiln_engine *engine = NULL;
  kiln_solve_opts *opts = NULL;
  kiln_result *result = NULL;
  kiln_error *err = NULL;
  char output[4096];
  snprintf(output, sizeof output, "type=local,dest=%s", out);
  check(kiln_engine_open(root, &engine), "kiln_engine_open");
  check(kiln_solve_opts_new(&opts), "kiln_solve_opts_new");
  check(kiln_solve_opts_add_local(opts, "rootfs", rootfs), "add_local rootfs");
  check(kiln_solve_opts_add_local(opts, "ctx", ctx), "add_local ctx");
  check(kiln_solve_opts_add_output(opts, output), "add_output");
  check(export_cache ? kiln_solve_opts_add_cache_export(opts, cache_csv) : kiln_solve_opts_add_cache_import(opts, cache_csv),
        "cache option");
  check(kiln_solve_opts_set_progress(opts, on_progress, NULL), "set_progress");
  kiln_status s = kiln_engine_solve(engine, app, opts, &result, &err);
  if (s != KILN_OK) {
    fprintf(stderr, "solve failed (%s): %s\n", kiln_status_name((int32_t)s), kiln_error_message(err));
    for (size_t i = 0; i < kiln_error_log_tail_len(err); i++) fprintf(stderr, "  | %s\n", kiln_error_log_tail_line(err, i));
    exit(1);
  }
  size_t executed = kiln_result_executed(result);
  printf("  %zu executed, %zu cached\n", executed, kiln_result_cached(result));
  kiln_result_free(&result);
  kiln_solve_opts_free(&opts);
  kiln_engine_free(&engine);
  return executed;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s ROOTFS CTX WORKDIR\n", argv[0]);
    return 2;
  }
  const char *rootfs = argv[1], *ctx = argv[2], *work = argv[3];
  char root_a[4096], root_b[4096], out_a[4096], out_b[4096], export_csv[4096], import_csv[4096];
  snprintf(root_a, sizeof root_a, "%s/root-a", work);
  snprintf(root_b, sizeof root_b, "%s/root-b", work);
  snprintf(out_a, sizeof out_a, "%s/out-a", work);
  snprintf(out_b, sizeof out_b, "%s/out-b", work);
  snprintf(export_csv, sizeof export_csv, "type=local,dest=%s/cache,mode=max", work);
  snprintf(import_csv, sizeof import_csv, "type=local,src=%s/cache", work);

  /* The graph: run a step with the context bind-mounted, then copy a file from the context. */
  kiln_state *base = NULL, *src = NULL, *rooted = NULL, *app = NULL;
  kiln_exec_opts *eo = NULL;
  kiln_exec *ex = NULL;
  const char *cmd[] = {"/bin/sh", "-c", "cat /ctx/hello.txt > /greeting"};
  check(kiln_state_local("rootfs", &base), "kiln_state_local");
  check(kiln_state_local("ctx", &src), "kiln_state_local");
  check(kiln_exec_opts_new(&eo), "kiln_exec_opts_new");
  check(kiln_exec_opts_add_bind_mount(eo, "/ctx", src, true), "add_bind_mount");
  check(kiln_state_run(base, cmd, 3, eo, &ex), "kiln_state_run");
  check(kiln_exec_root(ex, &rooted), "kiln_exec_root");
  check(kiln_state_copy(rooted, src, "/hello.txt", "/app/hello.txt", KILN_COPY_CREATE_DEST_PATH, &app), "kiln_state_copy");
  /* Intermediate handles can go right away: `app` keeps what it needs. */
  kiln_state_free(&rooted);
  kiln_exec_free(&ex);
  kiln_exec_opts_free(&eo);
  kiln_state_free(&src);
  kiln_state_free(&base);

  printf("build 1 (exports its cache):\n");
  build(app, rootfs, ctx, root_a, out_a, export_csv, 1);
  printf("build 2 (fresh root, imports the cache):\n");
  size_t executed = build(app, rootfs, ctx, root_b, out_b, import_csv, 0);
  kiln_state_free(&app);
  if (executed != 0) {
    fprintf(stderr, "expected every step from the imported cache, but %zu executed\n", executed);
    return 1;
  }
  printf("ok: output in %s, nothing re-ran\n", out_b);
  return 0;
}
