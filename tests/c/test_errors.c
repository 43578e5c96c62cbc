/* Every engine error kind maps to its own status, and real failures of several kinds arrive with
 * the right status, kind name and message. */
#include "common.h"
#include <ctype.h>

static void every_kind_has_its_own_status(void) {
  size_t n = kiln_error_kind_count();
  CHECK(n >= 16);
  int seen[256] = {0};
  for (size_t i = 0; i < n; i++) {
    kiln_status s = kiln_error_kind_status(i);
    const char *kind = kiln_error_kind_name(i);
    const char *sname = kiln_status_name((int32_t)s);
    CHECK(kind != NULL);
    CHECK(sname != NULL);
    CHECK(s != KILN_OK && s != KILN_ERR_UNKNOWN && s != KILN_ERR_INVALID_ARGUMENT);
    CHECK((int)s > 0 && (int)s < 99);
    if ((int)s > 0 && (int)s < 256) {
      CHECK(seen[(int)s] == 0);
      seen[(int)s] = 1;
    }
    /* KILN_ERR_<KIND IN UPPER CASE> */
    char want[128];
    size_t k = (size_t)snprintf(want, sizeof want, "KILN_ERR_");
    for (const char *c = kind; c && *c && k + 1 < sizeof want; c++) want[k++] = (char)toupper((unsigned char)*c);
    want[k] = '\0';
    if (sname == NULL || strcmp(sname, want) != 0) {
      fprintf(stderr, "kind %zu (%s): status %s, want %s\n", i, kind, sname, want);
      failures++;
    }
  }
  /* The stable numbers the header promises. */
  CHECK(KILN_OK == 0);
  CHECK(KILN_ERR_DEFINITION == 1);
  CHECK(KILN_ERR_OPTION == 2);
  CHECK(KILN_ERR_EXEC == 3);
  CHECK(KILN_ERR_ROOT_IN_USE == 12);
  CHECK(KILN_ERR_INTERNAL == 16);
  CHECK(KILN_ERR_NOT_FOUND == 17);
  CHECK(KILN_ERR_CALLBACK == 18);
  CHECK(KILN_ERR_UNKNOWN == 99);
  CHECK(KILN_ERR_NULL_ARGUMENT == 100);
  CHECK(KILN_ERR_INVALID_UTF8 == 101);
  CHECK(KILN_ERR_INVALID_ARGUMENT == 102);
  CHECK(KILN_ERR_PANIC == 103);
  CHECK(KILN_ERR_WRONG_THREAD == 104);
  for (int s = 0; s < 200; s++) {
    const char *name = kiln_status_name(s);
    int assigned = (s >= 0 && s <= 18) || s == 99 || (s >= 100 && s <= 104);
    CHECK((name != NULL) == assigned);
  }
}

static void option_error(void) {
  kiln_solve_opts *o = NULL;
  kiln_error *e = NULL;
  CHECK_OK(kiln_solve_opts_new(&o));
  CHECK_STATUS(kiln_solve_opts_add_cache_export(o, "type=local,dest=/tmp/x,mode=maxx"), KILN_ERR_OPTION);
  CHECK_OK(kiln_error_last(&e));
  CHECK(e != NULL);
  CHECK(kiln_error_status(e) == KILN_ERR_OPTION);
  CHECK(strcmp(kiln_error_kind(e), "option") == 0);
  CHECK(contains(kiln_error_message(e), "mode"));
  CHECK(contains(kiln_error_message(e), "maxx"));
  CHECK(kiln_error_exit_code(e) == -1);
  CHECK(kiln_error_log_tail_len(e) == 0);
  kiln_error_free(&e);
  /* Successful calls leave the last error alone. */
  CHECK_OK(kiln_solve_opts_add_output(o, "type=local,dest=/tmp/x"));
  CHECK_OK(kiln_error_last(&e));
  CHECK(e != NULL && kiln_error_status(e) == KILN_ERR_OPTION);
  kiln_error_free(&e);
  kiln_solve_opts_free(&o);
}

static void engine_errors(const char *tmp) {
  kiln_engine *a = NULL, *b = NULL;
  kiln_result *r = NULL;
  kiln_error *e = NULL;
  char *root = join(tmp, "root");
  CHECK_OK(kiln_engine_open(root, &a));
  /* A second engine on the same root. */
  CHECK_STATUS(kiln_engine_open(root, &b), KILN_ERR_ROOT_IN_USE);
  CHECK(b == NULL);
  CHECK(contains(last_message(), "in use"));
  /* A root that is a file. */
  char *file = join(tmp, "a-file");
  FILE *f = fopen(file, "w");
  CHECK(f != NULL);
  if (f) fclose(f);
  CHECK_STATUS(kiln_engine_open(file, &b), KILN_ERR_IO);
  CHECK(contains(last_message(), "a-file"));
  /* Invalid definition bytes. */
  CHECK_STATUS(kiln_engine_solve_definition(a, (const uint8_t *)"garbage", 7, NULL, &r, &e), KILN_ERR_DEFINITION);
  CHECK(e != NULL && strcmp(kiln_error_kind(e), "definition") == 0);
  kiln_error_free(&e);
  /* A local source nobody mapped. */
  kiln_state *s = NULL;
  CHECK_OK(kiln_state_local("unmapped", &s));
  kiln_status st = kiln_engine_solve(a, s, NULL, &r, &e);
  CHECK(st != KILN_OK);
  CHECK(e != NULL && kiln_error_status(e) == st);
  CHECK(contains(kiln_error_message(e), "unmapped"));
  kiln_error_free(&e);
  kiln_state_free(&s);
  /* Freed engine: the root is released and can be reopened. */
  kiln_engine_free(&a);
  CHECK_OK(kiln_engine_open(root, &b));
  kiln_engine_free(&b);
  free(file);
  free(root);
}

/* An I/O error inside a file op (a name longer than NAME_MAX: ENAMETOOLONG) crosses into the
 * dependent copy's task and arrives as KILN_ERR_IO with its path and cause in the message. */
static void io_error_in_file_op(const char *tmp) {
  kiln_engine *a = NULL;
  kiln_result *r = NULL;
  kiln_error *e = NULL;
  kiln_state *s0 = NULL, *s1 = NULL, *made = NULL, *dest = NULL, *st = NULL;
  char *root = join(tmp, "io-root");
  char name[300 + 4];
  memcpy(name, "/d/", 3);
  memset(name + 3, 'n', 300);
  name[303] = '\0';
  CHECK_OK(kiln_engine_open(root, &a));
  CHECK_OK(kiln_state_scratch(&s0));
  CHECK_OK(kiln_state_mkdir(s0, "/d", 0755, 0, &s1));
  CHECK_OK(kiln_state_mkfile(s1, name, 0644, (const uint8_t *)"x", 1, &made));
  CHECK_OK(kiln_state_scratch(&dest));
  CHECK_OK(kiln_state_copy(dest, made, "/d", "/copied", 0, &st));
  CHECK_STATUS(kiln_engine_solve(a, st, NULL, &r, &e), KILN_ERR_IO);
  CHECK(r == NULL);
  CHECK(e != NULL);
  if (e) {
    CHECK(kiln_error_status(e) == KILN_ERR_IO);
    CHECK(strcmp(kiln_error_kind(e), "io") == 0);
    const char *msg = kiln_error_message(e);
    char action[320];
    snprintf(action, sizeof action, "mkfile %s", name);
    CHECK(contains(msg, action));          /* what kiln was doing */
    CHECK(contains(msg, name + 1));        /* the path (d/nnn...) */
    CHECK(contains(msg, "File name too long")); /* the cause */
  }
  kiln_error_free(&e);
  kiln_state_free(&st);
  kiln_state_free(&dest);
  kiln_state_free(&made);
  kiln_state_free(&s1);
  kiln_state_free(&s0);
  kiln_engine_free(&a);
  free(root);
}

int main(void) {
  char *tmp = make_tmpdir();
  every_kind_has_its_own_status();
  option_error();
  engine_errors(tmp);
  io_error_in_file_op(tmp);
  remove_tree(tmp);
  free(tmp);
  return finish("test_errors");
}
