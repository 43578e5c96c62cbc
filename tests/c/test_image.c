/* Base-image config inheritance through kiln_engine_oci_layout, image config setters,
 * SOURCE_DATE_EPOCH reproducibility across two roots, platforms, and cache mounts in disk usage
 * and prune. */
#include "common.h"

/* Takes ownership of `*s`, replaces it with `next` (freeing the old state). */
static void step(kiln_state **s, kiln_state *next) {
  kiln_state_free(s);
  *s = next;
}

static kiln_result *solve(kiln_engine *e, kiln_state *st, kiln_solve_opts *o) {
  kiln_result *r = NULL;
  kiln_error *err = NULL;
  kiln_status s = kiln_engine_solve(e, st, o, &r, &err);
  if (s != KILN_OK) {
    fprintf(stderr, "solve failed: %s\n", err ? kiln_error_message(err) : "?");
    failures++;
  }
  kiln_error_free(&err);
  return r;
}

static kiln_state *run_sh(const kiln_state *base, const char *cmd, const kiln_exec_opts *eo) {
  const char *argv[] = {"/bin/sh", "-c", cmd};
  kiln_exec *ex = NULL;
  kiln_state *root = NULL;
  CHECK_OK(kiln_state_run(base, argv, 3, eo, &ex));
  CHECK_OK(kiln_exec_root(ex, &root));
  kiln_exec_free(&ex);
  return root;
}

/* The image digest of `type=oci` for a deterministic RUN, built on a fresh root with the epoch. */
static char *epoch_digest(const char *tmp, const char *name, const char *rootfs) {
  char *root = join(tmp, name), *dest = NULL, *csv = NULL;
  if (asprintf(&dest, "%s/%s.tar", tmp, name) < 0 || asprintf(&csv, "type=oci,dest=%s", dest) < 0) exit(2);
  kiln_engine *e = NULL;
  CHECK_OK(kiln_engine_open(root, &e));
  kiln_state *base = NULL;
  CHECK_OK(kiln_state_local("rootfs", &base));
  kiln_state *st = run_sh(base, "echo fixed > /built", NULL);
  kiln_solve_opts *o = NULL;
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_OK(kiln_solve_opts_add_local(o, "rootfs", rootfs));
  CHECK_OK(kiln_solve_opts_add_output(o, csv));
  CHECK_OK(kiln_solve_opts_set_source_date_epoch(o, 1700000000));
  kiln_result *r = solve(e, st, o);
  const char *d = kiln_result_exporter_response(r, "containerimage.digest");
  char *digest = strdup(d ? d : "");
  kiln_result_free(&r);
  kiln_solve_opts_free(&o);
  kiln_state_free(&st);
  kiln_state_free(&base);
  kiln_engine_free(&e);
  free(csv);
  free(dest);
  free(root);
  return digest;
}

int main(void) {
  char *tmp = make_tmpdir();
  char *rootfs = join(tmp, "rootfs");
  char *root = join(tmp, "root");
  char *layout = join(tmp, "layout");
  char *out = join(tmp, "out");
  make_rootfs(rootfs);
  kiln_engine *e = NULL;
  CHECK_OK(kiln_engine_open(root, &e));

  /* A base image with a config, exported to an OCI layout. */
  kiln_state *base = NULL, *next = NULL;
  CHECK_OK(kiln_state_local("rootfs", &base));
  CHECK_OK(kiln_state_with_env(base, "GREETING", "hello", &next)); step(&base, next);
  CHECK_OK(kiln_state_with_cwd(base, "/srv/app", &next)); step(&base, next);
  CHECK_OK(kiln_state_with_user(base, "1000", &next)); step(&base, next);
  CHECK_OK(kiln_state_with_exposed_port(base, "8080", &next)); step(&base, next);
  CHECK_OK(kiln_state_with_volume(base, "/data", &next)); step(&base, next);
  CHECK_OK(kiln_state_with_stop_signal(base, "SIGINT", &next)); step(&base, next);
  CHECK_OK(kiln_state_with_annotation(base, "org.example.a", "1", &next)); step(&base, next);
  kiln_solve_opts *o = NULL;
  char *csv = NULL;
  if (asprintf(&csv, "type=oci,dest=%s,tar=false,name=base", layout) < 0) exit(2);
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_OK(kiln_solve_opts_add_local(o, "rootfs", rootfs));
  CHECK_OK(kiln_solve_opts_add_output(o, csv));
  kiln_result *r = solve(e, base, o);
  kiln_result_free(&r);
  kiln_solve_opts_free(&o);
  free(csv);

  /* Resolved through the engine, the layout's config reaches a later RUN. */
  kiln_state *img = NULL;
  CHECK_OK(kiln_engine_oci_layout(e, layout, "base", NULL, &img, NULL));
  kiln_state *ran = img ? run_sh(img, "mkdir -p /tmp/o && { echo \"$GREETING\"; pwd; id -u; } > /tmp/o/report", NULL)
                        : NULL;
  if (asprintf(&csv, "type=local,dest=%s", out) < 0) exit(2);
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_OK(kiln_solve_opts_add_output(o, csv));
  r = solve(e, ran, o);
  kiln_result_free(&r);
  kiln_solve_opts_free(&o);
  free(csv);
  char *report_path = join(out, "tmp/o/report");
  char *report = read_file(report_path);
  CHECK(report != NULL && strcmp(report, "hello\n/srv/app\n1000\n") == 0);
  free(report);
  free(report_path);
  CHECK_STATUS(kiln_engine_oci_layout(e, layout, "base", "not a platform", &next, NULL), KILN_ERR_OPTION);

  /* Platforms: malformed is an option error; a foreign one is refused when solving. */
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_STATUS(kiln_solve_opts_set_platform(o, "not a platform"), KILN_ERR_OPTION);
  CHECK_OK(kiln_solve_opts_add_local(o, "rootfs", rootfs));
  CHECK_OK(kiln_solve_opts_set_platform(o, "linux/s390x"));
  CHECK(kiln_engine_solve(e, ran, o, &r, NULL) != KILN_OK);
  CHECK(contains(last_message(), "s390x"));
  kiln_solve_opts_free(&o);
  CHECK_STATUS(kiln_state_image_for("busybox", "nope", &next), KILN_ERR_OPTION);

  /* Cache mounts are listed by type and removed by prune all. */
  kiln_exec_opts *eo = NULL;
  CHECK_OK(kiln_exec_opts_new(&eo));
  CHECK_OK(kiln_exec_opts_add_cache_mount(eo, "/cache", "ccache", KILN_CACHE_SHARED));
  kiln_state *plain = NULL; /* root: `base` runs as uid 1000, the cache dir is root's */
  CHECK_OK(kiln_state_local("rootfs", &plain));
  kiln_state *cached = run_sh(plain, "head -c 4096 /dev/zero > /cache/blob", eo);
  kiln_state_free(&plain);
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_OK(kiln_solve_opts_add_local(o, "rootfs", rootfs));
  r = solve(e, cached, o);
  kiln_result_free(&r);
  size_t records = 0;
  uint64_t bytes = 0;
  CHECK_OK(kiln_engine_disk_usage_of(e, "exec.cachemount", &records, &bytes, NULL));
  CHECK(records == 1 && bytes >= 4096);
  CHECK_OK(kiln_engine_prune(e, 0, true, NULL, NULL, NULL));
  CHECK_OK(kiln_engine_disk_usage_of(e, "exec.cachemount", &records, &bytes, NULL));
  CHECK(records == 0);
  kiln_solve_opts_free(&o);
  kiln_exec_opts_free(&eo);

  /* SOURCE_DATE_EPOCH: two fresh roots export the same image digest. */
  char *d1 = epoch_digest(tmp, "epoch-a", rootfs), *d2 = epoch_digest(tmp, "epoch-b", rootfs);
  CHECK(strncmp(d1, "sha256:", 7) == 0 && strcmp(d1, d2) == 0);
  free(d1);
  free(d2);

  kiln_state_free(&cached);
  kiln_state_free(&ran);
  kiln_state_free(&img);
  kiln_state_free(&base);
  kiln_engine_free(&e);
  remove_tree(tmp);
  free(out);
  free(layout);
  free(root);
  free(rootfs);
  free(tmp);
  return finish("test_image");
}
