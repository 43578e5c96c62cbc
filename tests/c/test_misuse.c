/* Misuse of the C API: NULL everywhere, invalid UTF-8, bad values, double free through the
 * documented rule, solving with a freed state. Every case must return an error status (or the
 * documented neutral value), never crash; ASan/UBSan watch for memory errors. */
#include "common.h"

static const char BAD_UTF8[] = {'c', 't', 'x', (char)0xff, (char)0xfe, '\0'};

static void null_out_params(void) {
  kiln_state *s = NULL;
  CHECK_STATUS(kiln_state_scratch(NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_local("x", NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_image("busybox", NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_oci_layout("/tmp", "tag", NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_solve_opts_new(NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_exec_opts_new(NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_engine_open("/tmp/kiln-never", NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_error_last(NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK(contains(last_message(), "`out`"));
  CHECK_OK(kiln_state_scratch(&s));
  CHECK_STATUS(kiln_state_to_bytes(s, NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_mkdir(s, "/d", 0755, 0, NULL), KILN_ERR_NULL_ARGUMENT);
  kiln_state_free(&s);
}

static void null_handles_and_strings(void) {
  kiln_state *s = (kiln_state *)0x1; /* must be overwritten with NULL on failure */
  kiln_exec *ex = NULL;
  kiln_bytes *b = NULL;
  const char *argv[] = {"/bin/true"};
  CHECK_STATUS(kiln_state_local(NULL, &s), KILN_ERR_NULL_ARGUMENT);
  CHECK(s == NULL);
  CHECK(contains(last_message(), "`name`"));
  CHECK_STATUS(kiln_state_image(NULL, &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_oci_layout(NULL, "t", &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_oci_layout("/d", NULL, &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_with_env(NULL, "A", "B", &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_with_cwd(NULL, "/", &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_run(NULL, argv, 1, NULL, &ex), KILN_ERR_NULL_ARGUMENT);
  CHECK(ex == NULL);
  CHECK_STATUS(kiln_exec_root(NULL, &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_exec_mount_output(NULL, "/m", &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_copy(NULL, NULL, "/a", "/b", 0, &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_mkdir(NULL, "/a", 0755, 0, &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_mkfile(NULL, "/a", 0644, NULL, 0, &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_rm(NULL, "/a", 0, &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_merge(NULL, 2, &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_to_bytes(NULL, &b), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_solve_opts_add_output(NULL, "type=local,dest=x"), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_solve_opts_add_cache_export(NULL, "type=local,dest=x"), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_solve_opts_add_cache_import(NULL, "type=local,src=x"), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_solve_opts_add_local(NULL, "n", "/d"), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_solve_opts_add_secret_value(NULL, "id", (const uint8_t *)"x", 1), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_solve_opts_set_progress(NULL, NULL, NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_exec_opts_set_cwd(NULL, "/"), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_exec_opts_set_user(NULL, "root"), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_exec_opts_add_env(NULL, "A", "B"), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_exec_opts_add_bind_mount(NULL, "/m", NULL, true), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_exec_opts_add_cache_mount(NULL, "/m", "id", KILN_CACHE_SHARED), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_exec_opts_add_tmpfs_mount(NULL, "/m", 0), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_exec_opts_add_secret_mount(NULL, "/m", "id", 0, 0, 0400, false), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_exec_opts_set_readonly_rootfs(NULL, true), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_exec_opts_set_network(NULL, KILN_NETWORK_NONE), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_engine_open(NULL, (kiln_engine **)&s), KILN_ERR_NULL_ARGUMENT);

  /* Strings inside otherwise valid calls. */
  kiln_solve_opts *o = NULL;
  kiln_exec_opts *eo = NULL;
  kiln_state *base = NULL;
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_OK(kiln_exec_opts_new(&eo));
  CHECK_OK(kiln_state_scratch(&base));
  CHECK_STATUS(kiln_solve_opts_add_output(o, NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_solve_opts_add_local(o, "n", NULL), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_solve_opts_add_secret_value(o, "id", NULL, 4), KILN_ERR_NULL_ARGUMENT);
  CHECK_OK(kiln_solve_opts_add_secret_value(o, "empty", NULL, 0));
  CHECK_STATUS(kiln_exec_opts_add_bind_mount(eo, "/m", NULL, true), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_exec_opts_add_env(eo, NULL, "v"), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_mkfile(base, "/f", 0644, NULL, 3, &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_copy(base, base, NULL, "/b", 0, &s), KILN_ERR_NULL_ARGUMENT);
  CHECK_STATUS(kiln_state_run(base, NULL, 1, NULL, &ex), KILN_ERR_NULL_ARGUMENT);
  const char *with_null[] = {"/bin/sh", NULL};
  CHECK_STATUS(kiln_state_run(base, with_null, 2, NULL, &ex), KILN_ERR_NULL_ARGUMENT);
  CHECK(contains(last_message(), "argv[1]"));
  const kiln_state *list[] = {base, NULL};
  CHECK_STATUS(kiln_state_merge(list, 2, &s), KILN_ERR_NULL_ARGUMENT);
  CHECK(contains(last_message(), "states[1]"));
  kiln_state_free(&base);
  kiln_exec_opts_free(&eo);
  kiln_solve_opts_free(&o);
}

static void getters_on_null(void) {
  CHECK(kiln_error_message(NULL) == NULL);
  CHECK(kiln_error_kind(NULL) == NULL);
  CHECK(kiln_error_vertex(NULL) == NULL);
  CHECK(kiln_error_exit_code(NULL) == -1);
  CHECK(kiln_error_log_tail_len(NULL) == 0);
  CHECK(kiln_error_log_tail_line(NULL, 0) == NULL);
  CHECK(kiln_error_status(NULL) == KILN_ERR_NULL_ARGUMENT);
  CHECK(kiln_result_cached(NULL) == 0);
  CHECK(kiln_result_executed(NULL) == 0);
  CHECK(kiln_result_exporter_response_len(NULL) == 0);
  CHECK(kiln_result_exporter_response_key(NULL, 0) == NULL);
  CHECK(kiln_result_exporter_response_value(NULL, 0) == NULL);
  CHECK(kiln_result_exporter_response(NULL, "k") == NULL);
  CHECK(kiln_bytes_data(NULL) == NULL);
  CHECK(kiln_bytes_len(NULL) == 0);
  CHECK(kiln_status_name(12345) == NULL);
  CHECK(kiln_status_name(-1) == NULL);
  CHECK(kiln_error_kind_status(99999) == KILN_ERR_INVALID_ARGUMENT);
  CHECK(kiln_error_kind_name(99999) == NULL);
  CHECK(kiln_version() != NULL && strlen(kiln_version()) > 0);
}

static void frees_accept_null(void) {
  kiln_engine_free(NULL);
  kiln_state_free(NULL);
  kiln_exec_free(NULL);
  kiln_exec_opts_free(NULL);
  kiln_solve_opts_free(NULL);
  kiln_result_free(NULL);
  kiln_error_free(NULL);
  kiln_bytes_free(NULL);
  kiln_engine *e = NULL;
  kiln_state *s = NULL;
  kiln_exec *x = NULL;
  kiln_exec_opts *eo = NULL;
  kiln_solve_opts *so = NULL;
  kiln_result *r = NULL;
  kiln_error *er = NULL;
  kiln_bytes *b = NULL;
  kiln_engine_free(&e);
  kiln_state_free(&s);
  kiln_exec_free(&x);
  kiln_exec_opts_free(&eo);
  kiln_solve_opts_free(&so);
  kiln_result_free(&r);
  kiln_error_free(&er);
  kiln_bytes_free(&b);
}

static void invalid_utf8(void) {
  kiln_state *s = NULL, *base = NULL;
  kiln_solve_opts *o = NULL;
  kiln_exec_opts *eo = NULL;
  kiln_exec *ex = NULL;
  kiln_engine *e = NULL;
  CHECK_OK(kiln_state_scratch(&base));
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_OK(kiln_exec_opts_new(&eo));
  CHECK_STATUS(kiln_state_local(BAD_UTF8, &s), KILN_ERR_INVALID_UTF8);
  CHECK(contains(last_message(), "not valid UTF-8"));
  CHECK_STATUS(kiln_state_image(BAD_UTF8, &s), KILN_ERR_INVALID_UTF8);
  CHECK_STATUS(kiln_state_oci_layout("/d", BAD_UTF8, &s), KILN_ERR_INVALID_UTF8);
  CHECK_STATUS(kiln_state_with_env(base, "K", BAD_UTF8, &s), KILN_ERR_INVALID_UTF8);
  CHECK_STATUS(kiln_state_mkdir(base, BAD_UTF8, 0755, 0, &s), KILN_ERR_INVALID_UTF8);
  CHECK_STATUS(kiln_state_copy(base, base, "/a", BAD_UTF8, 0, &s), KILN_ERR_INVALID_UTF8);
  const char *argv[] = {"/bin/sh", BAD_UTF8};
  CHECK_STATUS(kiln_state_run(base, argv, 2, NULL, &ex), KILN_ERR_INVALID_UTF8);
  CHECK(contains(last_message(), "argv[1]"));
  CHECK_STATUS(kiln_solve_opts_add_output(o, BAD_UTF8), KILN_ERR_INVALID_UTF8);
  CHECK_STATUS(kiln_solve_opts_add_cache_export(o, BAD_UTF8), KILN_ERR_INVALID_UTF8);
  CHECK_STATUS(kiln_solve_opts_add_cache_import(o, BAD_UTF8), KILN_ERR_INVALID_UTF8);
  CHECK_STATUS(kiln_solve_opts_add_local(o, BAD_UTF8, "/d"), KILN_ERR_INVALID_UTF8);
  CHECK_STATUS(kiln_solve_opts_add_secret_value(o, BAD_UTF8, (const uint8_t *)"\xff", 1), KILN_ERR_INVALID_UTF8);
  CHECK_STATUS(kiln_exec_opts_add_env(eo, BAD_UTF8, "v"), KILN_ERR_INVALID_UTF8);
  CHECK_STATUS(kiln_exec_opts_set_cwd(eo, BAD_UTF8), KILN_ERR_INVALID_UTF8);
  CHECK_STATUS(kiln_exec_opts_add_cache_mount(eo, "/c", BAD_UTF8, KILN_CACHE_LOCKED), KILN_ERR_INVALID_UTF8);
  CHECK_STATUS(kiln_engine_open(BAD_UTF8, &e), KILN_ERR_INVALID_UTF8);
  CHECK(e == NULL);
  /* Secret values are bytes, not strings: any bytes are fine. */
  CHECK_OK(kiln_solve_opts_add_secret_value(o, "bin", (const uint8_t *)"\xff\x00\xfe", 3));
  kiln_exec_opts_free(&eo);
  kiln_solve_opts_free(&o);
  kiln_state_free(&base);
}

static void bad_values(void) {
  kiln_state *base = NULL, *s = NULL;
  kiln_exec_opts *eo = NULL;
  kiln_exec *ex = NULL;
  kiln_solve_opts *o = NULL;
  CHECK_OK(kiln_state_local("rootfs", &base));
  CHECK_OK(kiln_exec_opts_new(&eo));
  CHECK_OK(kiln_solve_opts_new(&o));
  const char *argv[] = {"/bin/true"};
  CHECK_STATUS(kiln_state_run(base, argv, 0, NULL, &ex), KILN_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(kiln_state_copy(base, base, "/a", "/b", 0x100, &s), KILN_ERR_INVALID_ARGUMENT);
  CHECK(contains(last_message(), "KILN_COPY_"));
  CHECK_STATUS(kiln_state_mkdir(base, "/a", 0755, 0x8, &s), KILN_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(kiln_state_rm(base, "/a", 0x10, &s), KILN_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(kiln_exec_opts_set_network(eo, 7), KILN_ERR_INVALID_ARGUMENT);
  CHECK(contains(last_message(), "KILN_NETWORK_NONE"));
  CHECK_STATUS(kiln_exec_opts_add_cache_mount(eo, "/c", "id", 9), KILN_ERR_INVALID_ARGUMENT);
  /* Core validates the whole run (the same rules and errors as Python and Node). */
  kiln_exec_opts *bad = NULL;
  CHECK_OK(kiln_exec_opts_new(&bad));
  CHECK_OK(kiln_exec_opts_add_env(bad, "A=B", "v"));
  CHECK_STATUS(kiln_state_run(base, argv, 1, bad, &ex), KILN_ERR_OPTION);
  CHECK(contains(last_message(), "env"));
  kiln_exec_opts_free(&bad);
  CHECK_STATUS(kiln_exec_opts_add_secret_mount(eo, "/s", "id", 0, 0, 070000, false), KILN_ERR_OPTION);
  CHECK(contains(last_message(), "mode"));
  CHECK_STATUS(kiln_state_oci_layout("/d", "sha256:nothex", &s), KILN_ERR_OPTION);
  CHECK(contains(last_message(), "64"));
  /* Secrets: a file that is not there names the id and the kind, never the path (it may be a value). */
  CHECK_STATUS(kiln_solve_opts_add_secret_file(o, "tok", "hunter2"), KILN_ERR_IO);
  CHECK(contains(last_message(), "tok") && !contains(last_message(), "hunter2"));
  CHECK_OK(kiln_solve_opts_add_secret_value(o, "dup", (const uint8_t *)"x", 1));
  CHECK_STATUS(kiln_solve_opts_add_secret_value(o, "dup", (const uint8_t *)"y", 1), KILN_ERR_OPTION);
  CHECK_STATUS(kiln_solve_opts_add_output(o, "type=nope"), KILN_ERR_OPTION);
  CHECK_STATUS(kiln_solve_opts_add_local(o, "", "/d"), KILN_ERR_INVALID_ARGUMENT);

  /* A readonly bind has no output. */
  kiln_state *ctx = NULL;
  CHECK_OK(kiln_state_local("ctx", &ctx));
  CHECK_OK(kiln_exec_opts_add_bind_mount(eo, "/ro", ctx, true));
  CHECK_OK(kiln_exec_opts_add_bind_mount(eo, "/rw", ctx, false));
  CHECK_OK(kiln_state_run(base, argv, 1, eo, &ex));
  CHECK_STATUS(kiln_exec_mount_output(ex, "/ro", &s), KILN_ERR_INVALID_ARGUMENT);
  CHECK(s == NULL);
  CHECK_OK(kiln_exec_mount_output(ex, "/rw", &s));
  CHECK(s != NULL);
  kiln_state_free(&s);
  kiln_exec_free(&ex);
  kiln_state_free(&ctx);
  kiln_solve_opts_free(&o);
  kiln_exec_opts_free(&eo);
  kiln_state_free(&base);
}

/* The documented rule: free through the owning variable; it becomes NULL, so a second free is a
 * no-op and any later use is a NULL-argument error. */
static void double_free_and_use_after_free(const char *tmp) {
  kiln_state *s = NULL, *derived = NULL;
  kiln_solve_opts *o = NULL;
  kiln_result *r = NULL;
  kiln_error *err = NULL;
  kiln_engine *e = NULL;
  kiln_bytes *b = NULL;
  CHECK_OK(kiln_state_local("ctx", &s));
  CHECK_OK(kiln_state_mkdir(s, "/x", 0755, 0, &derived));
  kiln_state_free(&s);
  CHECK(s == NULL);
  kiln_state_free(&s); /* double free through the same variable: no-op */
  /* States built from a freed state stay valid. */
  CHECK_OK(kiln_state_to_bytes(derived, &b));
  CHECK(kiln_bytes_len(b) > 0 && kiln_bytes_data(b) != NULL);
  kiln_bytes_free(&b);
  kiln_bytes_free(&b);

  CHECK_OK(kiln_solve_opts_new(&o));
  kiln_solve_opts_free(&o);
  kiln_solve_opts_free(&o);
  CHECK_STATUS(kiln_solve_opts_add_output(o, "type=local,dest=/tmp/x"), KILN_ERR_NULL_ARGUMENT);

  char *root = join(tmp, "root");
  CHECK_OK(kiln_engine_open(root, &e));
  /* Solving a freed state: the freed variable is NULL, so the call is refused. */
  CHECK_STATUS(kiln_engine_solve(e, s, NULL, &r, &err), KILN_ERR_NULL_ARGUMENT);
  CHECK(r == NULL);
  CHECK(err != NULL && kiln_error_status(err) == KILN_ERR_NULL_ARGUMENT);
  CHECK(contains(kiln_error_message(err), "`state`"));
  CHECK(contains(kiln_error_kind(err), "null_argument"));
  kiln_error_free(&err);
  kiln_error_free(&err);
  CHECK(err == NULL);
  /* NULL out with a valid err: refused, and err still filled. */
  CHECK_STATUS(kiln_engine_solve(e, derived, NULL, NULL, &err), KILN_ERR_NULL_ARGUMENT);
  CHECK(err != NULL);
  kiln_error_free(&err);
  /* Malformed definition bytes. */
  CHECK_STATUS(kiln_engine_solve_definition(e, (const uint8_t *)"\x0a\xff\xff", 3, NULL, &r, NULL),
               KILN_ERR_DEFINITION);
  CHECK_STATUS(kiln_engine_solve_definition(e, NULL, 5, NULL, &r, NULL), KILN_ERR_NULL_ARGUMENT);
  kiln_engine_free(&e);
  kiln_engine_free(&e);
  CHECK(e == NULL);
  CHECK_STATUS(kiln_engine_solve(e, derived, NULL, &r, NULL), KILN_ERR_NULL_ARGUMENT);
  kiln_state_free(&derived);
  free(root);
}

int main(void) {
  char *tmp = make_tmpdir();
  null_out_params();
  null_handles_and_strings();
  getters_on_null();
  frees_accept_null();
  invalid_utf8();
  bad_values();
  double_free_and_use_after_free(tmp);
  remove_tree(tmp);
  free(tmp);
  return finish("test_misuse");
}
