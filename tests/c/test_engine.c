/* Engine-level C API: cancelling a blocking solve through a kiln_cancel_token (from the progress
 * callback thread and from another pthread), workers, disk usage, prune, and the http/git/image
 * config/worker selector builders. Leftovers are checked right after the cancelled solve returns:
 * it returns only once its own containers are killed and its mounts released, without waiting for
 * another solve still running on the same engine. */
#include "common.h"
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>

/* How many processes run `sleep SECS` (a RUN's container process); each test sleeps its own time. */
static int sleepers_of(const char *secs) {
  int n = 0;
  char want[32];
  int want_len = snprintf(want, sizeof want, "sleep%c%s", 0, secs) + 1; /* cmdline is NUL-separated */
  DIR *d = opendir("/proc");
  struct dirent *e;
  if (d == NULL) return -1;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    char path[300], buf[64] = {0};
    snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) continue;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    if (len >= (size_t)want_len && memcmp(buf, want, (size_t)want_len) == 0) n++;
  }
  closedir(d);
  return n;
}

static int sleepers(void) { return sleepers_of("1000"); }

/* How many mounts of this process's namespace lie under `root`. */
static int mounts_under(const char *root) {
  int n = 0;
  char line[8192];
  FILE *f = fopen("/proc/self/mountinfo", "r");
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f) != NULL) {
    /* Field 5 is the mount point. */
    char *p = line;
    for (int i = 0; i < 4 && p != NULL; i++) {
      p = strchr(p, ' ');
      if (p) p++;
    }
    if (p != NULL && strncmp(p, root, strlen(root)) == 0) n++;
  }
  fclose(f);
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

struct cancel_ctx {
  kiln_cancel_token *token;
  atomic_int started; /* the RUN printed "started" */
  int cancel_in_callback;
  const char *root;
  atomic_int containers_seen; /* runc containers of the engine when the RUN said "started" */
};

static void on_progress(const kiln_progress_event *ev, void *userdata) {
  struct cancel_ctx *c = userdata;
  if (ev->kind != KILN_PROGRESS_LOG || ev->data_len < 7 || memmem(ev->data, ev->data_len, "started", 7) == NULL) return;
  atomic_store(&c->containers_seen, runc_containers(c->root));
  atomic_store(&c->started, 1);
  if (c->cancel_in_callback) kiln_cancel_token_cancel(c->token);
}

/* The other-thread canceller blocks on a condition variable until the callback saw the RUN start. */
struct canceller {
  struct cancel_ctx *ctx;
  pthread_mutex_t mu;
  pthread_cond_t cv;
};

static struct canceller canceller = {NULL, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static void on_progress_signal(const kiln_progress_event *ev, void *userdata) {
  on_progress(ev, userdata);
  pthread_mutex_lock(&canceller.mu);
  pthread_cond_broadcast(&canceller.cv);
  pthread_mutex_unlock(&canceller.mu);
}

static void *cancel_thread(void *arg) {
  struct cancel_ctx *c = arg;
  pthread_mutex_lock(&canceller.mu);
  while (!atomic_load(&c->started)) pthread_cond_wait(&canceller.cv, &canceller.mu);
  pthread_mutex_unlock(&canceller.mu);
  kiln_cancel_token_cancel(c->token);
  return NULL;
}

static kiln_state *sleeper_graph_cmd(const char *cmd) {
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

static kiln_state *sleeper_graph(void) { return sleeper_graph_cmd("echo started; exec sleep 1000"); }

/* A solve on its own pthread (cancelled through its token) that signals once its RUN started. */
struct bg_solve {
  const kiln_engine *engine;
  kiln_state *st;
  kiln_solve_opts *opts;
  kiln_cancel_token *token;
  kiln_status status;
  atomic_int started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
};

static void on_bg_progress(const kiln_progress_event *ev, void *userdata) {
  struct bg_solve *b = userdata;
  if (ev->kind != KILN_PROGRESS_LOG || memmem(ev->data, ev->data_len, "started", 7) == NULL) return;
  pthread_mutex_lock(&b->mu);
  atomic_store(&b->started, 1);
  pthread_cond_broadcast(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

static void *bg_solve_thread(void *arg) {
  struct bg_solve *b = arg;
  kiln_result *r = NULL;
  b->status = kiln_engine_solve(b->engine, b->st, b->opts, &r, NULL);
  kiln_result_free(&r);
  return NULL;
}

/* Cancelling one solve returns once its own cleanup ran, while another solve of the same engine
 * keeps running (its container is still there when the first returns); then that one is cancelled. */
static void cancel_one_of_two(const kiln_engine *engine, const char *root, const char *rootfs) {
  struct bg_solve b = {.engine = engine, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  struct cancel_ctx c = {0};
  kiln_solve_opts *o = NULL;
  kiln_result *r = NULL;
  pthread_t t;
  b.st = sleeper_graph_cmd("echo other-started; exec sleep 1011");
  CHECK_OK(kiln_cancel_token_new(&b.token));
  CHECK_OK(kiln_solve_opts_new(&b.opts));
  CHECK_OK(kiln_solve_opts_add_local(b.opts, "rootfs", rootfs));
  CHECK_OK(kiln_solve_opts_set_progress(b.opts, on_bg_progress, &b));
  CHECK_OK(kiln_solve_opts_set_cancel(b.opts, b.token));
  CHECK(pthread_create(&t, NULL, bg_solve_thread, &b) == 0);
  pthread_mutex_lock(&b.mu);
  while (!atomic_load(&b.started)) pthread_cond_wait(&b.cv, &b.mu);
  pthread_mutex_unlock(&b.mu);

  /* Ours: cancelled from its progress callback once its RUN started. */
  kiln_state *st = sleeper_graph_cmd("echo ours-started; exec sleep 1012");
  CHECK_OK(kiln_cancel_token_new(&c.token));
  c.cancel_in_callback = 1;
  c.root = root;
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_OK(kiln_solve_opts_add_local(o, "rootfs", rootfs));
  CHECK_OK(kiln_solve_opts_set_progress(o, on_progress, &c));
  CHECK_OK(kiln_solve_opts_set_cancel(o, c.token));
  CHECK_STATUS(kiln_engine_solve(engine, st, o, &r, NULL), KILN_ERR_CANCELLED);
  CHECK(atomic_load(&c.started));
  CHECK(atomic_load(&c.containers_seen) == 2); /* both RUNs were running */
  /* Ours is gone; the other solve's container still runs. */
  CHECK(sleepers_of("1012") == 0);
  CHECK(sleepers_of("1011") == 1);
  CHECK(runc_containers(root) == 1);

  CHECK_OK(kiln_cancel_token_cancel(b.token));
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(b.status == KILN_ERR_CANCELLED);
  CHECK(sleepers_of("1011") == 0);
  CHECK(mounts_under(root) == 0);
  CHECK(runc_containers(root) == 0);
  kiln_solve_opts_free(&o);
  kiln_cancel_token_free(&c.token);
  kiln_state_free(&st);
  kiln_solve_opts_free(&b.opts);
  kiln_cancel_token_free(&b.token);
  kiln_state_free(&b.st);
}

static void cancelled_solve(const kiln_engine *engine, const char *root, const char *rootfs, int from_callback) {
  struct cancel_ctx c = {0};
  kiln_solve_opts *o = NULL;
  kiln_result *r = NULL;
  kiln_error *err = NULL;
  kiln_state *st = sleeper_graph();
  pthread_t t;
  CHECK_OK(kiln_cancel_token_new(&c.token));
  CHECK(!kiln_cancel_token_is_cancelled(c.token));
  c.cancel_in_callback = from_callback;
  c.root = root;
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_OK(kiln_solve_opts_add_local(o, "rootfs", rootfs));
  CHECK_OK(kiln_solve_opts_set_progress(o, from_callback ? on_progress : on_progress_signal, &c));
  CHECK_OK(kiln_solve_opts_set_cancel(o, c.token));
  if (!from_callback) CHECK(pthread_create(&t, NULL, cancel_thread, &c) == 0);
  CHECK_STATUS(kiln_engine_solve(engine, st, o, &r, &err), KILN_ERR_CANCELLED);
  if (!from_callback) CHECK(pthread_join(t, NULL) == 0);
  CHECK(r == NULL);
  CHECK(err != NULL && kiln_error_status(err) == KILN_ERR_CANCELLED);
  CHECK(atomic_load(&c.started));
  CHECK(atomic_load(&c.containers_seen) >= 1); /* the RUN really was running */
  CHECK(kiln_cancel_token_is_cancelled(c.token));
  /* Right away, no waiting: the solve returned only after its cleanup. */
  CHECK(sleepers() == 0);
  CHECK(mounts_under(root) == 0);
  CHECK(runc_containers(root) == 0);
  /* A cancelled token stays cancelled: a later solve with it is cancelled at once. */
  CHECK_STATUS(kiln_engine_solve(engine, st, o, &r, NULL), KILN_ERR_CANCELLED);
  /* Freeing the token while the options hold it is fine; clearing makes them uncancellable. */
  kiln_cancel_token_free(&c.token);
  CHECK(c.token == NULL);
  CHECK_OK(kiln_solve_opts_set_cancel(o, NULL));
  kiln_error_free(&err);
  kiln_solve_opts_free(&o);
  kiln_state_free(&st);
}

int main(void) {
  char *tmp = make_tmpdir();
  char *rootfs = join(tmp, "rootfs");
  char *root = join(tmp, "root");
  make_rootfs(rootfs);
  kiln_engine *e = NULL;
  CHECK_OK(kiln_engine_open(root, &e));

  /* Cancellation from the progress callback thread, then from another pthread. */
  cancelled_solve(e, root, rootfs, 1);
  cancelled_solve(e, root, rootfs, 0);
  /* Cancelling one of two concurrent solves does not wait for the other. */
  cancel_one_of_two(e, root, rootfs);
  CHECK_STATUS(kiln_cancel_token_cancel(NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK(!kiln_cancel_token_is_cancelled(NULL));
  kiln_cancel_token_free(NULL);

  /* The engine still works after the cancels; an uncancelled token changes nothing. */
  {
    kiln_state *s0 = NULL, *s1 = NULL, *s2 = NULL;
    kiln_solve_opts *o = NULL;
    kiln_cancel_token *tok = NULL;
    kiln_result *r = NULL;
    CHECK_OK(kiln_state_scratch(&s0));
    CHECK_OK(kiln_state_mkfile(s0, "/a", 0644, (const uint8_t *)"a", 1, &s1));
    CHECK_OK(kiln_state_with_custom_name(s1, "make a", &s2));
    CHECK_OK(kiln_cancel_token_new(&tok));
    CHECK_OK(kiln_solve_opts_new(&o));
    CHECK_OK(kiln_solve_opts_set_cancel(o, tok));
    CHECK_OK(kiln_engine_solve(e, s2, o, &r, NULL));
    CHECK(kiln_result_executed(r) == 1);
    kiln_result_free(&r);
    kiln_cancel_token_free(&tok);
    kiln_solve_opts_free(&o);
    kiln_state_free(&s2);
    kiln_state_free(&s1);
    kiln_state_free(&s0);
  }

  /* Workers: the default first, with the labels the selectors match on. */
  size_t nw = kiln_engine_worker_count(e);
  CHECK(nw >= 1);
  const char *wname = kiln_engine_worker_name(e, 0);
  const char *snap = kiln_engine_worker_label(e, 0, "snapshotter");
  CHECK(wname != NULL && snap != NULL);
  CHECK(contains(wname, snap));
  CHECK(strcmp(kiln_engine_worker_label(e, 0, "executor"), "runc") == 0);
  CHECK(kiln_engine_worker_name(e, nw) == NULL);
  CHECK(kiln_engine_worker_label(e, 0, "no-such-label") == NULL);
  CHECK(kiln_engine_worker_count(NULL) == 0);
  CHECK(kiln_engine_worker_name(NULL, 0) == NULL);

  /* Worker selectors and the image config setters: a matching selector solves, a missing label
   * is KILN_ERR_WORKER; the image config reaches an OCI layout's config. */
  {
    kiln_state *s0 = NULL, *s1 = NULL, *ok = NULL, *bad = NULL, *img = NULL, *u = NULL, *c = NULL;
    kiln_solve_opts *o = NULL;
    kiln_result *r = NULL;
    const char *keys[] = {"snapshotter"};
    const char *good[] = {snap};
    const char *nope[] = {"no-such-snapshotter"};
    const char *cmd[] = {"/bin/app", "--serve"};
    CHECK_OK(kiln_state_scratch(&s0));
    CHECK_OK(kiln_state_mkfile(s0, "/sel", 0644, (const uint8_t *)"s", 1, &s1));
    CHECK_OK(kiln_state_with_worker_selector(s1, keys, good, 1, &ok));
    CHECK_OK(kiln_engine_solve(e, ok, NULL, &r, NULL));
    kiln_result_free(&r);
    CHECK_OK(kiln_state_with_worker_selector(s1, keys, nope, 1, &bad));
    CHECK_STATUS(kiln_engine_solve(e, bad, NULL, &r, NULL), KILN_ERR_WORKER);
    CHECK(contains(last_message(), "no-such-snapshotter"));
    CHECK_OK(kiln_state_with_user(s1, "nobody", &u));
    CHECK_OK(kiln_state_with_cmd(u, cmd, 2, &c));
    CHECK_OK(kiln_state_with_label(c, "org.example.kind", "test", &img));
    char *layout = join(tmp, "layout");
    char *csv = NULL;
    if (asprintf(&csv, "type=oci,dest=%s,tar=false", layout) < 0) exit(2);
    CHECK_OK(kiln_solve_opts_new(&o));
    CHECK_OK(kiln_solve_opts_add_output(o, csv));
    CHECK_OK(kiln_engine_solve(e, img, o, &r, NULL));
    /* The config blob is the only blob mentioning the label; grep the blobs for it. */
    char *grep = NULL;
    if (asprintf(&grep, "grep -rlq '\"org.example.kind\":\"test\"' '%s/blobs' && grep -rlq '\"Cmd\":\\[\"/bin/app\",\"--serve\"\\]' '%s/blobs' && grep -rlq '\"User\":\"nobody\"' '%s/blobs'", layout, layout, layout) < 0) exit(2);
    CHECK(system(grep) == 0);
    free(grep);
    free(csv);
    free(layout);
    kiln_result_free(&r);
    kiln_solve_opts_free(&o);
    kiln_state_free(&img);
    kiln_state_free(&c);
    kiln_state_free(&u);
    kiln_state_free(&bad);
    kiln_state_free(&ok);
    kiln_state_free(&s1);
    kiln_state_free(&s0);
  }

  /* Symlinks, hostnames and ignore_cache: the run sees its hostname and the link, and with
   * ignore_cache executes again on an otherwise cached graph. */
  {
    kiln_state *base = NULL, *h = NULL, *l = NULL, *root = NULL, *again = NULL;
    kiln_exec_opts *eo = NULL;
    kiln_exec *ex = NULL, *ex2 = NULL;
    kiln_solve_opts *o = NULL;
    kiln_result *r = NULL;
    const char *argv[] = {"/bin/sh", "-c", "test \"$(hostname)\" = kiln-host && test \"$(readlink /lnk)\" = /etc/hostname"};
    char *rootfs_dir = join(tmp, "rootfs");
    CHECK_OK(kiln_state_local("rootfs", &base));
    CHECK_OK(kiln_state_symlink(base, "/etc/hostname", "/lnk", &l));
    CHECK_OK(kiln_state_with_hostname(l, "kiln-host", &h));
    CHECK_OK(kiln_state_run(h, argv, 3, NULL, &ex));
    CHECK_OK(kiln_exec_root(ex, &root));
    CHECK_OK(kiln_solve_opts_new(&o));
    CHECK_OK(kiln_solve_opts_add_local(o, "rootfs", rootfs_dir));
    CHECK_OK(kiln_engine_solve(e, root, o, &r, NULL));
    CHECK(kiln_result_executed(r) >= 2);
    kiln_result_free(&r);
    CHECK_OK(kiln_engine_solve(e, root, o, &r, NULL));
    CHECK(kiln_result_executed(r) == 0);
    kiln_result_free(&r);
    kiln_state_free(&root);
    CHECK_OK(kiln_exec_opts_new(&eo));
    CHECK_OK(kiln_exec_opts_set_hostname(eo, "kiln-host"));
    CHECK_OK(kiln_exec_opts_set_ignore_cache(eo, true));
    CHECK_OK(kiln_state_run(l, argv, 3, eo, &ex2));
    CHECK_OK(kiln_exec_root(ex2, &again));
    CHECK_OK(kiln_engine_solve(e, again, o, &r, NULL));
    CHECK(kiln_result_executed(r) == 1);
    kiln_result_free(&r);
    CHECK_OK(kiln_state_ignore_cache(l, &root));
    kiln_state_free(&root);
    free(rootfs_dir);
    kiln_solve_opts_free(&o);
    kiln_state_free(&again);
    kiln_exec_free(&ex2);
    kiln_exec_opts_free(&eo);
    kiln_exec_free(&ex);
    kiln_state_free(&h);
    kiln_state_free(&l);
    kiln_state_free(&base);
  }

  /* Disk usage counts the records; prune(all) removes them and reports what went. */
  {
    size_t records = 0, removed = 0;
    uint64_t bytes = 0, freed = 0;
    CHECK_OK(kiln_engine_disk_usage(e, &records, &bytes, NULL));
    CHECK(records >= 2);
    CHECK(bytes > 0);
    CHECK_STATUS(kiln_engine_disk_usage(e, NULL, &bytes, NULL), KILN_ERR_NULL_ARGUMENT);
    CHECK_STATUS(kiln_engine_disk_usage(NULL, &records, &bytes, NULL), KILN_ERR_NULL_ARGUMENT);
    CHECK_OK(kiln_engine_prune(e, 0, true, &removed, &freed, NULL));
    CHECK(removed >= 2);
    CHECK(freed > 0);
    CHECK_OK(kiln_engine_disk_usage(e, &records, &bytes, NULL));
    CHECK(records == 0 && bytes == 0);
    CHECK_OK(kiln_engine_prune(e, 0, false, NULL, NULL, NULL)); /* reports are optional */
    CHECK_STATUS(kiln_engine_prune(NULL, 0, true, NULL, NULL, NULL), KILN_ERR_NULL_ARGUMENT);
  }

  /* http and git sources build definitions (solving them needs a server: see the core tests). */
  {
    kiln_state *h = NULL, *g = NULL, *bad = NULL;
    kiln_bytes *b = NULL;
    CHECK_OK(kiln_state_http("http://127.0.0.1:1/file.txt", NULL, "f.txt", &h));
    CHECK_OK(kiln_state_to_bytes(h, &b));
    CHECK(kiln_bytes_len(b) > 0);
    kiln_bytes_free(&b);
    CHECK_STATUS(kiln_state_http("http://127.0.0.1:1/x", "sha256:nothex", NULL, &bad), KILN_ERR_OPTION);
    CHECK(bad == NULL);
    CHECK_OK(kiln_state_git("https://example.invalid/r.git", NULL, NULL, 0, &g));
    kiln_state_free(&g);
    CHECK_OK(kiln_state_git("https://example.invalid/r.git", "main", "sub", KILN_GIT_KEEP_GIT_DIR, &g));
    CHECK_OK(kiln_state_to_bytes(g, &b));
    CHECK(kiln_bytes_len(b) > 0);
    kiln_bytes_free(&b);
    CHECK_STATUS(kiln_state_git("https://example.invalid/r.git", NULL, NULL, 0x80, &bad), KILN_ERR_INVALID_ARGUMENT);
    kiln_state_free(&g);
    kiln_state_free(&h);
  }

  kiln_engine_free(&e);
  remove_tree(tmp);
  free(root);
  free(rootfs);
  free(tmp);
  return finish("test_engine");
}
