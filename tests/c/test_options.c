/* Engine options (kiln_engine_opts: parallelism, runtime, snapshotters) and the built-in
 * progress display (kiln_solve_opts_set_progress_display) on the process's stderr. */
#include "common.h"
#include <fcntl.h>
#include <unistd.h>

/* Solves a one-RUN graph with display `mode`, stderr redirected to a file; returns what the
 * display wrote (heap string). */
static char *solve_with_display(kiln_engine *e, const char *rootfs, const char *mode, const char *log) {
  kiln_state *base = NULL, *root = NULL;
  kiln_exec *ex = NULL;
  kiln_solve_opts *o = NULL;
  kiln_result *r = NULL;
  const char *argv[] = {"/bin/sh", "-c", "echo shown-in-progress"};
  CHECK_OK(kiln_state_local("rootfs", &base));
  CHECK_OK(kiln_state_run(base, argv, 3, NULL, &ex));
  CHECK_OK(kiln_exec_root(ex, &root));
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_OK(kiln_solve_opts_add_local(o, "rootfs", rootfs));
  CHECK_OK(kiln_solve_opts_set_progress_display(o, mode));
  fflush(stderr);
  int saved = dup(2);
  int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(saved >= 0 && fd >= 0);
  dup2(fd, 2);
  kiln_status st = kiln_engine_solve(e, root, o, &r, NULL);
  fflush(stderr);
  dup2(saved, 2);
  close(fd);
  close(saved);
  CHECK(st == KILN_OK);
  kiln_result_free(&r);
  kiln_solve_opts_free(&o);
  kiln_exec_free(&ex);
  kiln_state_free(&root);
  kiln_state_free(&base);
  return read_file(log);
}

int main(void) {
  char *tmp = make_tmpdir();
  char *rootfs = join(tmp, "rootfs");
  char *root = join(tmp, "root");
  char *log = join(tmp, "stderr.log");
  make_rootfs(rootfs);

  /* Engine options: bad values are refused naming what is accepted; good ones open. */
  kiln_engine_opts *eo = NULL;
  CHECK_STATUS(kiln_engine_opts_new("", &eo), KILN_ERR_INVALID_ARGUMENT);
  CHECK_OK(kiln_engine_opts_new(root, &eo));
  CHECK_STATUS(kiln_engine_opts_add_snapshotter(eo, "zfs"), KILN_ERR_OPTION);
  CHECK(contains(last_message(), "overlayfs or native"));
  CHECK_STATUS(kiln_engine_opts_set_runtime(eo, ""), KILN_ERR_INVALID_ARGUMENT);
  CHECK_OK(kiln_engine_opts_set_parallelism(eo, 1));
  CHECK_OK(kiln_engine_opts_set_runtime(eo, "runc"));
  CHECK_OK(kiln_engine_opts_add_snapshotter(eo, "native"));
  kiln_engine *e = NULL;
  CHECK_OK(kiln_engine_open_with(eo, &e));
  kiln_engine_opts_free(&eo);
  CHECK(eo == NULL);
  CHECK(e != NULL);
  if (e == NULL) return finish("test_options");
  /* Only the native snapshotter was asked for: it is the one worker. */
  CHECK(kiln_engine_worker_count(e) == 1);
  CHECK(contains(kiln_engine_worker_label(e, 0, "snapshotter"), "native"));

  /* The built-in display: buildctl-style lines, or one JSON object per event. */
  char *plain = solve_with_display(e, rootfs, "plain", log);
  CHECK(contains(plain, "echo shown-in-progress"));
  CHECK(contains(plain, " DONE "));
  free(plain);
  char *json = solve_with_display(e, rootfs, "rawjson", log);
  CHECK(contains(json, "{\"type\":"));
  free(json);
  kiln_solve_opts *o = NULL;
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_STATUS(kiln_solve_opts_set_progress_display(o, "fancy"), KILN_ERR_OPTION);
  CHECK(contains(last_message(), "progress"));
  kiln_solve_opts_free(&o);

  kiln_engine_free(&e);
  remove_tree(tmp);
  free(log);
  free(root);
  free(rootfs);
  free(tmp);
  return finish("test_options");
}
