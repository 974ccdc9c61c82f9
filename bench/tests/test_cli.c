/*
 * test_cli.c: the shared command-line number parsers.
 */
#include <stdint.h>

#include "util/cli.h"
#include "tt.h"

/* Signed integers: an optional '-', decimal digits, nothing else, inside
 * the range; anything else is an error and leaves the output alone. */
static void test_parse_i64(void)
{
	int64_t v = 7;

	TT_CHECK(cli_parse_i64("--x", "-14", -100, 100, &v) == 0 && v == -14);
	TT_CHECK(cli_parse_i64("--x", "0", -100, 100, &v) == 0 && v == 0);
	TT_CHECK(cli_parse_i64("--x", "100", -100, 100, &v) == 0 && v == 100);
	TT_CHECK(cli_parse_i64("--x", "-9223372036854775808", INT64_MIN,
	                       INT64_MAX, &v) == 0 && v == INT64_MIN);
	v = 7;
	TT_CHECK(cli_parse_i64("--x", "101", -100, 100, &v) == CLI_EBADARG);
	TT_CHECK(cli_parse_i64("--x", "-101", -100, 100, &v) == CLI_EBADARG);
	TT_CHECK(cli_parse_i64("--x", "--14", -100, 100, &v) == CLI_EBADARG);
	TT_CHECK(cli_parse_i64("--x", "+14", -100, 100, &v) == CLI_EBADARG);
	TT_CHECK(cli_parse_i64("--x", "14b", -100, 100, &v) == CLI_EBADARG);
	TT_CHECK(cli_parse_i64("--x", " 14", -100, 100, &v) == CLI_EBADARG);
	TT_CHECK(cli_parse_i64("--x", "", -100, 100, &v) == CLI_EBADARG);
	TT_CHECK(cli_parse_i64("--x", "-", -100, 100, &v) == CLI_EBADARG);
	TT_CHECK(cli_parse_i64("--x", "99999999999999999999", INT64_MIN,
	                       INT64_MAX, &v) == CLI_EBADARG);
	TT_CHECK(cli_parse_i64("--x", NULL, -100, 100, &v) == CLI_EBADARG);
	TT_CHECK(v == 7);
}

int main(void)
{
	cli_prog = "test_cli";
	TT_RUN(test_parse_i64);
	return TT_DONE();
}
