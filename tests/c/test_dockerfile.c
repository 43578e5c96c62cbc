/* The Dockerfile frontend from C: kiln_dockerfile (an extensible state carrying the target's
 * image config) and kiln_engine_solve with kiln_solve_opts_set_frontend("dockerfile.v0"), built
 * offline on the busybox rootfs as the named context `base`; option and Dockerfile errors. */
#include "common.h"

static const char *DOCKERFILE =
    "ARG MSG=default\n"
    "FROM base AS build\n"
    "ARG MSG\n"
    "ENV STAGE=build\n"
    "WORKDIR /w\n"
    "COPY . .\n"
    "RUN echo \"$MSG $STAGE\" > msg && ls > list\n"
    "FROM scratch\n"
    "COPY --from=build /w /out\n"
    "ENV K=v\n"
    "WORKDIR /out\n"
    "ENTRYPOINT [\"/bin/sh\"]\n";

static void write_file(const char *dir, const char *name, const char *text) {
  char *p = join(dir, name);
  FILE *f = fopen(p, "w");
  if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
    perror(p);
    exit(2);
  }
  free(p);
}

static void check_file(const char *dir, const char *name, const char *want) {
  char *p = join(dir, name);
  char *got = read_file(p);
  if (got == NULL || strcmp(got, want) != 0) {
    fprintf(stderr, "%s: got %s, want %s\n", p, got ? got : "(unreadable)", want);
    failures++;
  }
  free(got);
  free(p);
}

static kiln_solve_opts *opts_for(const char *ctx, const char *rootfs, const char *output) {
  kiln_solve_opts *o = NULL;
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_OK(kiln_solve_opts_add_local(o, "context", ctx));
  CHECK_OK(kiln_solve_opts_add_local(o, "dockerfile", ctx));
  CHECK_OK(kiln_solve_opts_add_local(o, "rootfs", rootfs));
  if (output != NULL) CHECK_OK(kiln_solve_opts_add_output(o, output));
  return o;
}

static kiln_result *solve(kiln_engine *e, const kiln_state *st, const kiln_solve_opts *o) {
  kiln_result *r = NULL;
  kiln_error *err = NULL;
  if (kiln_engine_solve(e, st, o, &r, &err) != KILN_OK) {
    fprintf(stderr, "solve failed: %s\n", err ? kiln_error_message(err) : "?");
    failures++;
  }
  kiln_error_free(&err);
  return r;
}

int main(void) {
  char *tmp = make_tmpdir();
  char *rootfs = join(tmp, "rootfs"), *ctx = join(tmp, "ctx"), *root = join(tmp, "root");
  char *out = join(tmp, "out"), *img = join(tmp, "img"), *stage = join(tmp, "stage"), *fout = join(tmp, "fout");
  char *csv_out = NULL, *csv_img = NULL, *csv_stage = NULL, *csv_fout = NULL;
  if (asprintf(&csv_out, "type=local,dest=%s", out) < 0 || asprintf(&csv_img, "type=oci,dest=%s,tar=false", img) < 0 ||
      asprintf(&csv_stage, "type=local,dest=%s", stage) < 0 || asprintf(&csv_fout, "type=local,dest=%s", fout) < 0)
    exit(2);
  make_rootfs(rootfs);
  run_or_die("mkdir -p '%s/sub'", ctx);
  write_file(ctx, "a.txt", "a\n");
  write_file(ctx, "skip.log", "x\n");
  write_file(ctx, "sub/b.txt", "b\n");
  write_file(ctx, ".dockerignore", "*.log\n");
  write_file(ctx, "Dockerfile", DOCKERFILE);

  kiln_engine *e = NULL;
  CHECK_OK(kiln_engine_open(root, &e));

  /* kiln_dockerfile: the final stage, extended with a file, exported as a tree and an image. */
  kiln_dockerfile_opts *d = NULL;
  CHECK_OK(kiln_dockerfile_opts_new(&d));
  CHECK_OK(kiln_dockerfile_opts_add_build_arg(d, "MSG", "hello"));
  CHECK_OK(kiln_dockerfile_opts_add_context(d, "base", "local:rootfs"));
  CHECK_OK(kiln_dockerfile_opts_add_label(d, "org.example", "1"));
  kiln_state *st = NULL, *ext = NULL;
  CHECK_OK(kiln_dockerfile(ctx, d, &st));
  CHECK_OK(kiln_state_mkfile(st, "/extra", 0644, (const uint8_t *)"more\n", 5, &ext));
  kiln_solve_opts *o = opts_for(ctx, rootfs, csv_out);
  kiln_result *r = solve(e, ext, o);
  kiln_result_free(&r);
  kiln_solve_opts_free(&o);
  check_file(out, "out/msg", "hello build\n");
  check_file(out, "out/list", "Dockerfile\na.txt\nlist\nmsg\nsub\n"); /* .dockerignore: no skip.log */
  check_file(out, "out/sub/b.txt", "b\n");
  check_file(out, "extra", "more\n");
  o = opts_for(ctx, rootfs, csv_img);
  r = solve(e, ext, o);
  CHECK(r != NULL && kiln_result_executed(r) == 0);
  kiln_result_free(&r);
  kiln_solve_opts_free(&o);
  /* The image config the Dockerfile set reached the image's config blob. */
  run_or_die("grep -rqF '\"Entrypoint\":[\"/bin/sh\"]' '%s/blobs/sha256'", img);
  run_or_die("grep -rqF '\"org.example\":\"1\"' '%s/blobs/sha256'", img);
  kiln_state_free(&ext);
  kiln_state_free(&st);

  /* The first stage through the engine, extended with a RUN that sees the stage's env and cwd. */
  CHECK_OK(kiln_dockerfile_opts_set_target(d, "build"));
  kiln_error *err = NULL;
  CHECK_OK(kiln_engine_dockerfile(e, ctx, d, &st, &err));
  kiln_error_free(&err);
  const char *argv[] = {"/bin/sh", "-c", "{ cat msg; echo \"$STAGE\"; pwd; } > /w/copy"};
  kiln_exec *ex = NULL;
  CHECK_OK(kiln_state_run(st, argv, 3, NULL, &ex));
  CHECK_OK(kiln_exec_root(ex, &ext));
  o = opts_for(ctx, rootfs, csv_stage);
  r = solve(e, ext, o);
  kiln_result_free(&r);
  kiln_solve_opts_free(&o);
  check_file(stage, "w/copy", "hello build\nbuild\n/w\n");
  kiln_exec_free(&ex);
  kiln_state_free(&ext);
  kiln_state_free(&st);

  /* engine.solve with the dockerfile.v0 frontend. */
  o = opts_for(ctx, rootfs, csv_fout);
  CHECK_OK(kiln_solve_opts_set_frontend(o, "dockerfile.v0"));
  CHECK_OK(kiln_solve_opts_add_frontend_opt(o, "build-arg:MSG", "from-frontend"));
  CHECK_OK(kiln_solve_opts_add_frontend_opt(o, "context:base", "local:rootfs"));
  r = solve(e, NULL, o);
  kiln_result_free(&r);
  check_file(fout, "out/msg", "from-frontend build\n");
  /* A state and a frontend: refused. */
  CHECK_OK(kiln_state_scratch(&st));
  CHECK_STATUS(kiln_engine_solve(e, st, o, &r, NULL), KILN_ERR_INVALID_ARGUMENT);
  CHECK(contains(last_message(), "not both"));
  kiln_state_free(&st);
  /* An unknown frontend. */
  CHECK_OK(kiln_solve_opts_set_frontend(o, "nope.v1"));
  CHECK_STATUS(kiln_engine_solve(e, NULL, o, &r, &err), KILN_ERR_UNSUPPORTED);
  CHECK(err != NULL && contains(kiln_error_message(err), "frontend \"nope.v1\" is not supported"));
  kiln_error_free(&err);
  /* A bad Dockerfile line, through the frontend and through kiln_dockerfile. */
  write_file(ctx, "Dockerfile", "FROM base\nRUNN true\n");
  CHECK_OK(kiln_solve_opts_set_frontend(o, "dockerfile.v0"));
  CHECK_STATUS(kiln_engine_solve(e, NULL, o, &r, &err), KILN_ERR_DEFINITION);
  CHECK(err != NULL && contains(kiln_error_message(err), "Dockerfile:2: unknown instruction: RUNN"));
  kiln_error_free(&err);
  kiln_solve_opts_free(&o);
  CHECK_OK(kiln_dockerfile_opts_set_target(d, NULL));
  CHECK_STATUS(kiln_dockerfile(ctx, d, &st), KILN_ERR_DEFINITION);
  CHECK(contains(last_message(), "Dockerfile:2: unknown instruction: RUNN"));
  CHECK(st == NULL);
  /* A registry base needs the engine; a bad platform is an option error. */
  write_file(ctx, "Dockerfile", "FROM busybox\n");
  CHECK_STATUS(kiln_dockerfile(ctx, NULL, &st), KILN_ERR_UNSUPPORTED);
  CHECK(contains(last_message(), "resolved through an engine"));
  CHECK_STATUS(kiln_dockerfile_opts_set_platform(d, "not a platform"), KILN_ERR_OPTION);
  CHECK_STATUS(kiln_dockerfile(NULL, d, &st), KILN_ERR_NULL_ARGUMENT);
  kiln_dockerfile_opts_free(&d);
  kiln_dockerfile_opts_free(&d);

  /* SSH agents reach RUN --mount=type=ssh (kiln_solve_opts_add_ssh); entitlements grant
   * RUN --network=host (kiln_solve_opts_add_entitlement), which is refused without one. */
  char *sock = join(tmp, "agent.sock"), *sout = join(tmp, "sout");
  char *csv_sout = NULL;
  if (asprintf(&csv_sout, "type=local,dest=%s", sout) < 0) exit(2);
  run_or_die("cd '%s' && ssh-agent -a agent.sock > agent.env", tmp);
  write_file(ctx, "Dockerfile",
             "FROM base\nRUN --mount=type=ssh (test -S \"$SSH_AUTH_SOCK\" && echo socket) > /ssh\n"
             "RUN --network=host echo host > /net\n");
  o = opts_for(ctx, rootfs, csv_sout);
  CHECK_OK(kiln_solve_opts_set_frontend(o, "dockerfile.v0"));
  CHECK_OK(kiln_solve_opts_add_frontend_opt(o, "context:base", "local:rootfs"));
  CHECK_OK(kiln_solve_opts_add_ssh(o, "default", sock));
  CHECK(kiln_engine_solve(e, NULL, o, &r, &err) != KILN_OK);
  CHECK(err != NULL && contains(kiln_error_message(err), "network.host"));
  kiln_error_free(&err);
  CHECK_STATUS(kiln_solve_opts_add_entitlement(o, "nope"), KILN_ERR_OPTION);
  CHECK(contains(last_message(), "unknown entitlement"));
  CHECK_OK(kiln_solve_opts_add_entitlement(o, "network.host"));
  r = solve(e, NULL, o);
  kiln_result_free(&r);
  kiln_solve_opts_free(&o);
  check_file(sout, "ssh", "socket\n");
  check_file(sout, "net", "host\n");
  run_or_die("cd '%s' && kill $(sed -n 's/^SSH_AGENT_PID=\\([0-9]*\\);.*/\\1/p' agent.env)", tmp);
  free(sock), free(sout), free(csv_sout);

  kiln_engine_free(&e);
  remove_tree(tmp);
  free(csv_out), free(csv_img), free(csv_stage), free(csv_fout);
  free(rootfs), free(ctx), free(root), free(out), free(img), free(stage), free(fout), free(tmp);
  return finish("test_dockerfile");
}
