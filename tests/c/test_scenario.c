/* The shared cross-language scenario (tests/fixtures/scenario/README.md) through the C API. Every
 * step runs even if an earlier one failed, so one report shows all of them. */
#include "common.h"
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define GREETING "hello from the shared scenario\n"

struct progress {
  int started, cached, completed, errors, logs;
  int calls;
  const kiln_engine *engine;
  const kiln_state *state;
  kiln_status nested; /* what kiln_engine_solve returned when called inside the callback */
};

static void on_progress(const kiln_progress_event *ev, void *userdata) {
  struct progress *p = userdata;
  p->calls++;
  if (ev->json == NULL) failures++;
  switch (ev->kind) {
    case KILN_PROGRESS_VERTEX_STARTED: p->started++; break;
    case KILN_PROGRESS_VERTEX_CACHED: p->cached++; break;
    case KILN_PROGRESS_VERTEX_COMPLETED: p->completed++; break;
    case KILN_PROGRESS_VERTEX_ERROR: p->errors++; break;
    case KILN_PROGRESS_LOG: p->logs++; break;
    default: break;
  }
  if (p->calls == 1 && p->engine != NULL) {
    kiln_result *r = NULL;
    p->nested = kiln_engine_solve(p->engine, p->state, NULL, &r, NULL);
    kiln_result_free(&r);
  }
}

/* base = local("rootfs"); base.run(cat /ctx/hello.txt > /greeting, bind /ctx = local("ctx") ro)
 *   .root().copy(local("ctx"), "/hello.txt", "/app/hello.txt", create_dest_path) */
static kiln_state *app_graph(void) {
  kiln_state *base = NULL, *ctx = NULL, *root = NULL, *app = NULL;
  kiln_exec_opts *eo = NULL;
  kiln_exec *ex = NULL;
  const char *argv[] = {"/bin/sh", "-c", "cat /ctx/hello.txt > /greeting"};
  CHECK_OK(kiln_state_local("rootfs", &base));
  CHECK_OK(kiln_state_local("ctx", &ctx));
  CHECK_OK(kiln_exec_opts_new(&eo));
  CHECK_OK(kiln_exec_opts_add_bind_mount(eo, "/ctx", ctx, true));
  CHECK_OK(kiln_state_run(base, argv, 3, eo, &ex));
  CHECK_OK(kiln_exec_root(ex, &root));
  CHECK_OK(kiln_state_copy(root, ctx, "/hello.txt", "/app/hello.txt", KILN_COPY_CREATE_DEST_PATH, &app));
  kiln_state_free(&root);
  kiln_exec_free(&ex);
  kiln_exec_opts_free(&eo);
  kiln_state_free(&ctx);
  kiln_state_free(&base);
  return app;
}

/* Step 6: the golden definition, byte-identical to Rust, Python and Node
 * (tests/fixtures/scenario/definition.pb). Mount ids are NULL: core's defaults. */
static void check_golden(const kiln_state *app) {
  kiln_exec_opts *eo = NULL;
  kiln_exec *ex = NULL;
  kiln_state *root = NULL, *golden = NULL;
  kiln_bytes *bytes = NULL;
  const char *argv[] = {"/bin/sh", "-c", "true"};
  CHECK_OK(kiln_exec_opts_new(&eo));
  CHECK_OK(kiln_exec_opts_add_env(eo, "Z", "1"));
  CHECK_OK(kiln_exec_opts_add_env(eo, "A", "2"));
  CHECK_OK(kiln_exec_opts_set_network(eo, KILN_NETWORK_NONE));
  CHECK_OK(kiln_exec_opts_set_custom_name(eo, "golden"));
  CHECK_OK(kiln_exec_opts_add_cache_mount(eo, "/cache", NULL, KILN_CACHE_SHARED));
  CHECK_OK(kiln_exec_opts_add_secret_mount(eo, "/run/secrets/tok", NULL, 0, 0, 0400, false));
  CHECK_OK(kiln_state_run(app, argv, 3, eo, &ex));
  CHECK_OK(kiln_exec_root(ex, &root));
  CHECK_OK(kiln_state_mkdir(root, "/p/q", 0750, KILN_MKDIR_PARENTS, &golden));
  CHECK_OK(kiln_state_to_bytes(golden, &bytes));
  FILE *f = fopen(KILN_REPO "/tests/fixtures/scenario/definition.pb", "rb");
  CHECK(f != NULL);
  if (f != NULL) {
    static unsigned char want[1 << 16];
    size_t n = fread(want, 1, sizeof want, f);
    fclose(f);
    CHECK(n == kiln_bytes_len(bytes));
    CHECK(n == kiln_bytes_len(bytes) && memcmp(want, kiln_bytes_data(bytes), n) == 0);
  }
  kiln_bytes_free(&bytes);
  kiln_state_free(&golden);
  kiln_state_free(&root);
  kiln_exec_free(&ex);
  kiln_exec_opts_free(&eo);
}

static kiln_solve_opts *base_opts(const char *rootfs) {
  kiln_solve_opts *o = NULL;
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_OK(kiln_solve_opts_add_local(o, "rootfs", rootfs));
  CHECK_OK(kiln_solve_opts_add_local(o, "ctx", KILN_REPO "/tests/fixtures/scenario/ctx"));
  return o;
}

static void check_file(const char *dir, const char *rel, const char *want) {
  char *p = join(dir, rel);
  char *got = read_file(p);
  if (got == NULL || strcmp(got, want) != 0) {
    fprintf(stderr, "%s: got %s%s%s, want %s", p, got ? "\"" : "", got ? got : "(unreadable)", got ? "\"" : "",
            want);
    failures++;
  }
  free(got);
  free(p);
}

static char *fmt(const char *f, const char *a) {
  char *p = NULL;
  if (asprintf(&p, f, a) < 0) exit(2);
  return p;
}

struct concurrent {
  const kiln_engine *engine;
  const kiln_state *state;
  const kiln_solve_opts *opts;
  kiln_status status;
  size_t executed;
};

static void *solve_thread(void *arg) {
  struct concurrent *c = arg;
  kiln_result *r = NULL;
  c->status = kiln_engine_solve(c->engine, c->state, c->opts, &r, NULL);
  c->executed = kiln_result_executed(r);
  kiln_result_free(&r);
  return NULL;
}

/* A `kiln serve` for the steps through kiln_connect: KILN_BIN or <target>/debug/kiln, on a unix
 * socket under `dir`; waits (bounded) until it listens. Returns its pid. */
static pid_t start_kiln_serve(const char *dir, char **addr_out) {
  const char *bin = getenv("KILN_BIN");
  char *fallback = NULL;
  if (bin == NULL) {
    const char *target = getenv("CARGO_TARGET_DIR");
    if (asprintf(&fallback, "%s/debug/kiln", target ? target : KILN_REPO "/target") < 0) exit(2);
    bin = fallback;
  }
  if (access(bin, X_OK) != 0) {
    fprintf(stderr, "%s is missing: build it with `cargo build -p kiln-cli` (or set KILN_BIN)\n", bin);
    exit(2);
  }
  char *sock = join(dir, "kiln.sock"), *root = join(dir, "serve-root"), *addr = fmt("unix://%s", sock);
  pid_t pid = fork();
  if (pid == 0) {
    execl(bin, bin, "--root", root, "serve", "--addr", addr, (char *)NULL);
    _exit(127);
  }
  int up = 0;
  for (int i = 0; i < 1500 && !up; i++) { /* 30 s */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", sock);
    up = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0) close(fd);
    if (!up) usleep(20000);
  }
  if (!up) {
    fprintf(stderr, "kiln serve did not listen on %s within 30 s\n", sock);
    exit(2);
  }
  free(sock);
  free(root);
  free(fallback);
  *addr_out = addr;
  return pid;
}

/* buildkitd: KILN_BUILDKIT_ADDR, else ../shared/buildkit/start on a state dir under `dir`
 * (`*state` is set so the caller stops it). */
static char *buildkitd_addr(const char *dir, char **state) {
  const char *env = getenv("KILN_BUILDKIT_ADDR");
  *state = NULL;
  if (env != NULL && env[0] != '\0') return strdup(env);
  const char *bk = getenv("KILN_BUILDKIT_DIR");
  char *bkdir = bk ? strdup(bk) : strdup(KILN_REPO "/../shared/buildkit");
  *state = join(dir, "buildkitd");
  char *cmd = NULL;
  if (asprintf(&cmd, "'%s/start' '%s'", bkdir, *state) < 0) exit(2);
  FILE *p = popen(cmd, "r");
  char line[4096] = {0};
  if (p == NULL || fgets(line, sizeof line, p) == NULL || pclose(p) != 0) {
    fprintf(stderr, "could not start buildkitd with %s (set KILN_BUILDKIT_DIR or KILN_BUILDKIT_ADDR)\n", cmd);
    exit(2);
  }
  line[strcspn(line, "\n")] = '\0';
  free(cmd);
  free(bkdir);
  return strdup(line);
}

/* A client-side build on a daemon: solve the app graph, read /greeting from the result through
 * the daemon's LLB bridge, set as the result a scratch state holding what was read. */
struct remote_build {
  const kiln_state *app;
  int ok;
};

static int remote_build_cb(kiln_build_ctx *ctx, void *user_data) {
  struct remote_build *rb = user_data;
  kiln_ref *r = NULL;
  kiln_bytes *b = NULL;
  kiln_state *scratch = NULL, *report = NULL;
  if (kiln_build_ctx_solve(ctx, rb->app, &r, NULL) != KILN_OK) return 1;
  if (kiln_ref_read_file(r, "/greeting", 0, SIZE_MAX, &b, NULL) == KILN_OK && kiln_bytes_len(b) == strlen(GREETING) &&
      memcmp(kiln_bytes_data(b), GREETING, strlen(GREETING)) == 0) {
    rb->ok = 1;
    CHECK_OK(kiln_state_scratch(&scratch));
    CHECK_OK(kiln_state_mkfile(scratch, "/report", 0644, kiln_bytes_data(b), kiln_bytes_len(b), &report));
    CHECK_OK(kiln_build_ctx_set_result_state(ctx, report, NULL));
  }
  kiln_state_free(&report);
  kiln_state_free(&scratch);
  kiln_bytes_free(&b);
  kiln_ref_free(&r);
  return rb->ok ? 0 : 1;
}

/* Steps 1, 2-3 (the cache directory on this side, imported by the pruned daemon) and 4 through
 * kiln_connect to `addr`. BuildKit keys a RUN on a local rootfs by its session, so only kiln
 * serve must report the RUN cached after the import. */
static void through_daemon(const char *name, const char *addr, const kiln_state *app, const char *rootfs,
                           const char *tmp, int content_keyed) {
  int before = failures;
  kiln_engine *e = NULL;
  kiln_result *r = NULL;
  kiln_error *err = NULL;
  CHECK_OK(kiln_connect(addr, NULL, &e));
  CHECK(e != NULL && kiln_engine_address(e) != NULL && strcmp(kiln_engine_address(e), addr) == 0);
  CHECK(e != NULL && kiln_engine_worker_count(e) >= 1);
  char *dir = NULL;
  if (asprintf(&dir, "%s/%s", tmp, name) < 0) exit(2);
  char *cache = fmt("%s-cache", dir), *out = fmt("%s-out", dir);
  {
    kiln_solve_opts *o = base_opts(rootfs);
    char *exp = fmt("type=local,dest=%s,mode=max", cache);
    CHECK_OK(kiln_solve_opts_add_cache_export(o, exp));
    CHECK_OK(kiln_engine_solve(e, app, o, &r, &err));
    if (err) fprintf(stderr, "%s export: %s\n", name, kiln_error_message(err));
    kiln_result_free(&r);
    kiln_error_free(&err);
    free(exp);
    kiln_solve_opts_free(&o);
    char *index = join(cache, "index.json");
    char *idx = read_file(index);
    CHECK(idx != NULL && contains(idx, "\"org.opencontainers.image.ref.name\":\"latest\""));
    free(idx);
    free(index);
  }
  CHECK_OK(kiln_engine_prune(e, 0, true, NULL, NULL, NULL));
  {
    kiln_solve_opts *o = base_opts(rootfs);
    char *imp = fmt("type=local,src=%s", cache), *output = fmt("type=local,dest=%s", out);
    struct progress p = {0};
    CHECK_OK(kiln_solve_opts_add_cache_import(o, imp));
    CHECK_OK(kiln_solve_opts_add_output(o, output));
    CHECK_OK(kiln_solve_opts_set_progress(o, on_progress, &p));
    CHECK_OK(kiln_engine_solve(e, app, o, &r, &err));
    if (err) fprintf(stderr, "%s import: %s\n", name, kiln_error_message(err));
    check_file(out, "greeting", GREETING);
    check_file(out, "app/hello.txt", GREETING);
    if (content_keyed) CHECK(p.cached >= 1);
    kiln_result_free(&r);
    kiln_error_free(&err);
    free(imp);
    free(output);
    kiln_solve_opts_free(&o);
  }
  {
    kiln_state *base = NULL, *bad = NULL;
    kiln_exec *ex = NULL;
    kiln_solve_opts *o = base_opts(rootfs);
    const char *argv[] = {"/bin/sh", "-c", "echo bad-step-output; exit 7"};
    CHECK_OK(kiln_state_local("rootfs", &base));
    CHECK_OK(kiln_state_run(base, argv, 3, NULL, &ex));
    CHECK_OK(kiln_exec_root(ex, &bad));
    CHECK_STATUS(kiln_engine_solve(e, bad, o, &r, &err), KILN_ERR_EXEC);
    CHECK(err != NULL && kiln_error_exit_code(err) == 7);
    int found = 0;
    for (size_t i = 0; err != NULL && i < kiln_error_log_tail_len(err); i++)
      found |= contains(kiln_error_log_tail_line(err, i), "bad-step-output");
    CHECK(found);
    kiln_error_free(&err);
    kiln_solve_opts_free(&o);
    kiln_state_free(&bad);
    kiln_exec_free(&ex);
    kiln_state_free(&base);
  }
  {
    kiln_solve_opts *o = base_opts(rootfs);
    char *built = fmt("%s-build", dir), *output = fmt("type=local,dest=%s", built);
    struct remote_build rb = {app, 0};
    CHECK_OK(kiln_solve_opts_add_output(o, output));
    CHECK_OK(kiln_engine_build(e, o, remote_build_cb, &rb, &r, &err));
    if (err) fprintf(stderr, "%s build: %s\n", name, kiln_error_message(err));
    CHECK(rb.ok);
    check_file(built, "report", GREETING);
    kiln_result_free(&r);
    kiln_error_free(&err);
    free(output);
    free(built);
    kiln_solve_opts_free(&o);
  }
  kiln_engine_free(&e);
  free(cache);
  free(out);
  free(dir);
  printf("  through kiln_connect to %s: %s\n", name, failures == before ? "ok" : "FAILED");
}

static void report(const char *step, int before) {
  printf("  %s: %s\n", step, failures == before ? "ok" : "FAILED");
}

int main(void) {
  char *tmp = make_tmpdir();
  char *rootfs = join(tmp, "rootfs");
  make_rootfs(rootfs);
  char *root_a = join(tmp, "root-a"), *root_b = join(tmp, "root-b");
  char *out_a = join(tmp, "out-a"), *out_b = join(tmp, "out-b");
  kiln_state *app = app_graph();
  check_golden(app);
  kiln_engine *a = NULL, *b = NULL;
  kiln_result *r = NULL;
  kiln_error *err = NULL;
  int before;

  /* Step 2: solve in root A with a local output and a local cache export. */
  before = failures;
  CHECK_OK(kiln_engine_open(root_a, &a));
  {
    kiln_solve_opts *o = base_opts(rootfs);
    char *output = fmt("type=local,dest=%s", out_a);
    char *cache = fmt("type=local,dest=%s/cache,mode=max", tmp);
    struct progress p = {0};
    p.engine = a;
    p.state = app;
    CHECK_OK(kiln_solve_opts_add_output(o, output));
    CHECK_OK(kiln_solve_opts_add_cache_export(o, cache));
    CHECK_OK(kiln_solve_opts_set_progress(o, on_progress, &p));
    CHECK_OK(kiln_engine_solve(a, app, o, &r, &err));
    if (err) fprintf(stderr, "step 2: %s\n", kiln_error_message(err));
    CHECK(err == NULL || kiln_error_status(err) != KILN_OK);
    check_file(out_a, "greeting", GREETING);
    check_file(out_a, "app/hello.txt", GREETING);
    CHECK(kiln_result_executed(r) >= 2);
    CHECK(p.started >= 2 && p.completed >= 2);
    CHECK(p.nested == KILN_ERR_WRONG_THREAD);
    char *index = fmt("%s/cache/index.json", tmp);
    char *idx = read_file(index);
    CHECK(idx != NULL); /* the cache export wrote an OCI layout */
    free(idx);
    free(index);
    kiln_result_free(&r);
    kiln_error_free(&err);
    free(cache);
    free(output);
    kiln_solve_opts_free(&o);
  }
  report("step 2 (solve with cache export)", before);

  /* Step 3: a fresh root B imports the cache: nothing executes, same files. */
  before = failures;
  CHECK_OK(kiln_engine_open(root_b, &b));
  {
    kiln_solve_opts *o = base_opts(rootfs);
    char *output = fmt("type=local,dest=%s", out_b);
    char *cache = fmt("type=local,src=%s/cache", tmp);
    CHECK_OK(kiln_solve_opts_add_output(o, output));
    CHECK_OK(kiln_solve_opts_add_cache_import(o, cache));
    CHECK_OK(kiln_engine_solve(b, app, o, &r, &err));
    if (err) fprintf(stderr, "step 3: %s\n", kiln_error_message(err));
    CHECK(r != NULL && kiln_result_executed(r) == 0);
    CHECK(r != NULL && kiln_result_cached(r) > 0);
    if (r && kiln_result_executed(r) != 0) fprintf(stderr, "step 3: %zu vertices executed\n", kiln_result_executed(r));
    check_file(out_b, "greeting", GREETING);
    check_file(out_b, "app/hello.txt", GREETING);
    kiln_result_free(&r);
    kiln_error_free(&err);
    free(cache);
    free(output);
    kiln_solve_opts_free(&o);
  }
  report("step 3 (fresh root imports the cache)", before);

  /* The same graph as marshalled bytes solves to the same (now cached) result. */
  before = failures;
  {
    kiln_bytes *bytes = NULL;
    kiln_solve_opts *o = base_opts(rootfs);
    CHECK_OK(kiln_state_to_bytes(app, &bytes));
    CHECK_OK(kiln_engine_solve_definition(a, kiln_bytes_data(bytes), kiln_bytes_len(bytes), o, &r, NULL));
    CHECK(r != NULL && kiln_result_executed(r) == 0);
    kiln_result_free(&r);
    kiln_bytes_free(&bytes);
    kiln_solve_opts_free(&o);
  }
  report("definition bytes (to_bytes + solve_definition)", before);

  /* One engine, one state, one options handle, two threads solving at once (all warm). */
  before = failures;
  {
    kiln_solve_opts *o = base_opts(rootfs);
    struct concurrent c[2] = {{a, app, o, KILN_ERR_UNKNOWN, 99}, {a, app, o, KILN_ERR_UNKNOWN, 99}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&t[i], NULL, solve_thread, &c[i]) == 0);
    for (int i = 0; i < 2; i++) CHECK(pthread_join(t[i], NULL) == 0);
    for (int i = 0; i < 2; i++) {
      CHECK(c[i].status == KILN_OK);
      CHECK(c[i].executed == 0);
    }
    kiln_solve_opts_free(&o);
  }
  report("two threads solving on one engine", before);

  /* Step 4: a failing run is KILN_ERR_EXEC with exit code 7 and the output in the log tail. */
  before = failures;
  {
    kiln_state *base = NULL;
    kiln_exec *ex = NULL;
    kiln_state *bad = NULL;
    kiln_solve_opts *o = base_opts(rootfs);
    const char *argv[] = {"/bin/sh", "-c", "echo bad-step-output; exit 7"};
    CHECK_OK(kiln_state_local("rootfs", &base));
    CHECK_OK(kiln_state_run(base, argv, 3, NULL, &ex));
    CHECK_OK(kiln_exec_root(ex, &bad));
    CHECK_STATUS(kiln_engine_solve(a, bad, o, &r, &err), KILN_ERR_EXEC);
    CHECK(r == NULL);
    CHECK(err != NULL);
    CHECK(kiln_error_status(err) == KILN_ERR_EXEC);
    CHECK(kiln_error_exit_code(err) == 7);
    CHECK(kiln_error_vertex(err) != NULL);
    CHECK(strcmp(kiln_error_kind(err), "exec") == 0);
    int found = 0;
    for (size_t i = 0; i < kiln_error_log_tail_len(err); i++) found |= contains(kiln_error_log_tail_line(err, i), "bad-step-output");
    CHECK(found);
    CHECK(kiln_error_log_tail_line(err, kiln_error_log_tail_len(err)) == NULL);
    kiln_error *last = NULL;
    CHECK_OK(kiln_error_last(&last));
    CHECK(last != NULL && kiln_error_exit_code(last) == 7);
    kiln_error_free(&last);
    kiln_error_free(&err);
    kiln_solve_opts_free(&o);
    kiln_state_free(&bad);
    kiln_exec_free(&ex);
    kiln_state_free(&base);
  }
  report("step 4 (exec error, exit code 7, log tail)", before);

  /* Step 5: a bad cache export option names the key, the value and the accepted values. */
  before = failures;
  {
    kiln_solve_opts *o = NULL;
    char *cache = fmt("type=local,dest=%s/x,mode=maxx", tmp);
    CHECK_OK(kiln_solve_opts_new(&o));
    CHECK_STATUS(kiln_solve_opts_add_cache_export(o, cache), KILN_ERR_OPTION);
    const char *msg = last_message();
    CHECK(contains(msg, "mode"));
    CHECK(contains(msg, "maxx"));
    CHECK(contains(msg, "min"));
    CHECK(contains(msg, "max"));
    free(cache);
    kiln_solve_opts_free(&o);
  }
  report("step 5 (option error)", before);

  /* The same steps on a daemon: kiln serve and buildkitd through kiln_connect. */
  {
    char *serve_addr = NULL, *bk_state = NULL;
    pid_t serve = start_kiln_serve(tmp, &serve_addr);
    char *bk_addr = buildkitd_addr(tmp, &bk_state);
    through_daemon("kiln-serve", serve_addr, app, rootfs, tmp, 1);
    through_daemon("buildkitd", bk_addr, app, rootfs, tmp, 0);
    kiln_engine *none = NULL;
    char *nowhere = fmt("unix://%s/none.sock", tmp);
    CHECK_STATUS(kiln_connect(nowhere, NULL, &none), KILN_ERR_IO);
    CHECK(contains(last_message(), "none.sock"));
    free(nowhere);
    kill(serve, SIGTERM);
    waitpid(serve, NULL, 0);
    if (bk_state != NULL) {
      char *stop = NULL;
      if (asprintf(&stop, "'%s/stop' '%s' >/dev/null", getenv("KILN_BUILDKIT_DIR") ? getenv("KILN_BUILDKIT_DIR") : KILN_REPO "/../shared/buildkit", bk_state) >= 0) {
        if (system(stop) != 0) fprintf(stderr, "stopping buildkitd failed\n");
        free(stop);
      }
      free(bk_state);
    }
    free(serve_addr);
    free(bk_addr);
  }

  kiln_engine_free(&b);
  kiln_engine_free(&a);
  kiln_state_free(&app);
  remove_tree(tmp);
  free(out_a);
  free(out_b);
  free(root_a);
  free(root_b);
  free(rootfs);
  free(tmp);
  return finish("test_scenario");
}
