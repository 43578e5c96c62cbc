/* ci_build.c: a CI build as users write one, with kiln's C API: a build stage (a cache mount for
 * the toolchain's cache, a secret the step reads but never stores), a slim runtime stage that
 * copies only the artifact and carries an image config, pushed to a registry with a reproducible
 * digest; the build cache goes to a directory, and a second build in a fresh engine root (another
 * CI machine) imports it and runs nothing.
 *
 *   usage: ci_build ROOTFS REGISTRY WORKDIR      (REGISTRY like 127.0.0.1:5000; run as root)
 *
 * Build: cc ci_build.c $(pkg-config --cflags --libs kiln) -o ci_build */
#include <kiln.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints the failed call's error and exits. */
static void check(kiln_status s, const char *what) {
  if (s == KILN_OK) return;
  kiln_error *e = NULL;
  kiln_error_last(&e);
  fprintf(stderr, "%s failed: %s: %s\n", what, kiln_status_name((int32_t)s), e ? kiln_error_message(e) : "?");
  kiln_error_free(&e);
  exit(1);
}

/* The two-stage graph: build with a cache mount and a secret, then copy the artifact only. */
static kiln_state *graph(void) {
  kiln_state *base = NULL, *build = NULL, *s1 = NULL, *s2 = NULL, *s3 = NULL, *app = NULL;
  kiln_exec_opts *eo = NULL;
  kiln_exec *ex = NULL;
  const char *cmd[] = {"/bin/sh", "-c",
                       "mkdir -p /out && printf '#!/bin/sh\\necho hello from app\\n' > /out/app && chmod 755 /out/app"
                       " && wc -c < /run/secrets/token > /out/token-bytes && date >> /cache/builds"};
  const char *app_cmd[] = {"/usr/local/bin/app"};
  check(kiln_state_local("rootfs", &base), "kiln_state_local");
  check(kiln_exec_opts_new(&eo), "kiln_exec_opts_new");
  check(kiln_exec_opts_add_cache_mount(eo, "/cache", "ci-build", KILN_CACHE_SHARED), "add_cache_mount");
  check(kiln_exec_opts_add_secret_mount(eo, "/run/secrets/token", "token", 0, 0, 0400, false), "add_secret_mount");
  check(kiln_exec_opts_set_custom_name(eo, "build the app"), "set_custom_name");
  check(kiln_state_run(base, cmd, 3, eo, &ex), "kiln_state_run");
  check(kiln_exec_root(ex, &build), "kiln_exec_root");
  check(kiln_state_copy(base, build, "/out/app", "/usr/local/bin/app", KILN_COPY_CREATE_DEST_PATH, &s1), "copy");
  check(kiln_state_with_env(s1, "MODE", "production", &s2), "with_env");
  check(kiln_state_with_exposed_port(s2, "8080", &s3), "with_exposed_port");
  check(kiln_state_with_cmd(s3, app_cmd, 1, &app), "with_cmd");
  kiln_state_free(&s3);
  kiln_state_free(&s2);
  kiln_state_free(&s1);
  kiln_state_free(&build);
  kiln_exec_free(&ex);
  kiln_exec_opts_free(&eo);
  kiln_state_free(&base);
  return app;
}

/* Solves `app` on the machine (engine root) `root`, pushing `image`; `cache_export` or
 * `cache_import` (CSV, either may be NULL) moves the build cache. Returns the result. */
static kiln_result *on_machine(const kiln_state *app, const char *rootfs, const char *root, const char *image,
                               const char *cache_export, const char *cache_import) {
  kiln_engine *engine = NULL;
  kiln_solve_opts *opts = NULL;
  kiln_result *result = NULL;
  kiln_error *err = NULL;
  static const char token[] = "not-a-real-token";
  char output[4096];
  snprintf(output, sizeof output, "type=image,name=%s,push=true", image);
  check(kiln_engine_open(root, &engine), "kiln_engine_open");
  check(kiln_solve_opts_new(&opts), "kiln_solve_opts_new");
  check(kiln_solve_opts_add_local(opts, "rootfs", rootfs), "add_local");
  check(kiln_solve_opts_add_secret_value(opts, "token", (const uint8_t *)token, strlen(token)), "add_secret_value");
  check(kiln_solve_opts_add_output(opts, output), "add_output");
  check(kiln_solve_opts_set_source_date_epoch(opts, 1700000000), "set_source_date_epoch");
  check(kiln_solve_opts_set_progress_display(opts, "plain"), "set_progress_display");
  if (cache_export) check(kiln_solve_opts_add_cache_export(opts, cache_export), "add_cache_export");
  if (cache_import) check(kiln_solve_opts_add_cache_import(opts, cache_import), "add_cache_import");
  kiln_status s = kiln_engine_solve(engine, app, opts, &result, &err);
  if (s != KILN_OK) {
    fprintf(stderr, "solve failed (%s): %s\n", kiln_status_name((int32_t)s), kiln_error_message(err));
    exit(1);
  }
  kiln_solve_opts_free(&opts);
  kiln_engine_free(&engine);
  return result;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s ROOTFS REGISTRY WORKDIR\n", argv[0]);
    return 2;
  }
  const char *rootfs = argv[1], *registry = argv[2], *work = argv[3];
  char image[1024], root_a[4096], root_b[4096], cache_export[4096], cache_import[4096];
  snprintf(image, sizeof image, "%s/examples/c-app:1", registry);
  snprintf(root_a, sizeof root_a, "%s/ci-machine-a", work);
  snprintf(root_b, sizeof root_b, "%s/ci-machine-b", work);
  snprintf(cache_export, sizeof cache_export, "type=local,dest=%s/cache,mode=max", work);
  snprintf(cache_import, sizeof cache_import, "type=local,src=%s/cache", work);
  kiln_state *app = graph();
  kiln_result *first = on_machine(app, rootfs, root_a, image, cache_export, NULL);
  kiln_result *second = on_machine(app, rootfs, root_b, image, NULL, cache_import);
  const char *d1 = kiln_result_exporter_response(first, "containerimage.digest");
  const char *d2 = kiln_result_exporter_response(second, "containerimage.digest");
  printf("pushed %s@%s: %zu executed\n", image, d1, kiln_result_executed(first));
  printf("second machine: %zu executed, %zu cached\n", kiln_result_executed(second), kiln_result_cached(second));
  int ok = d1 && d2 && strcmp(d1, d2) == 0 && kiln_result_executed(second) == 0;
  kiln_result_free(&second);
  kiln_result_free(&first);
  kiln_state_free(&app);
  return ok ? 0 : 1;
}
