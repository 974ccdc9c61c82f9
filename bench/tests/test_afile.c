/* test_afile.c: atomic output files must never replace what is not a file. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/afile.h"
#include "tt.h"

static char dir[] = "/tmp/test_afile.XXXXXX";

static char *in_dir(const char *name)
{
	static char buf[4][256];
	static int i;
	char *b = buf[i++ % 4];
	snprintf(b, sizeof(buf[0]), "%s/%s", dir, name);
	return b;
}

static int write_text(const char *path, const char *text)
{
	struct afile af;
	int rv = afile_open(&af, path);
	if (rv != 0)
		return rv;
	fputs(text, af.fp);
	return afile_commit(&af);
}

static char *slurp(const char *path)
{
	static char buf[256];
	FILE *f = fopen(path, "r");
	size_t n;
	if (f == NULL)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* Entries in the scratch directory: a leftover temporary shows up here. */
static int count_entries(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;
	if (d == NULL)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void test_new_and_replace(void)
{
	const char *p = in_dir("out.json");
	TT_CHECK(write_text(p, "one\n") == 0);
	TT_CHECK(slurp(p) && strcmp(slurp(p), "one\n") == 0);
	TT_CHECK(write_text(p, "two\n") == 0);
	TT_CHECK(slurp(p) && strcmp(slurp(p), "two\n") == 0);
	TT_CHECK(count_entries() == 1); /* no temporary left */
	unlink(p);
}

static void test_abort_leaves_old(void)
{
	const char *p = in_dir("keep.json");
	struct afile af;
	TT_CHECK(write_text(p, "old\n") == 0);
	TT_CHECK(afile_open(&af, p) == 0);
	fputs("half", af.fp);
	afile_abort(&af);
	TT_CHECK(slurp(p) && strcmp(slurp(p), "old\n") == 0);
	TT_CHECK(count_entries() == 1);
	unlink(p);
}

static void test_symlink_kept(void)
{
	const char *target = in_dir("target.json");
	const char *link = in_dir("link.json");
	struct stat st;
	TT_CHECK(write_text(target, "old\n") == 0);
	TT_CHECK(symlink(target, link) == 0);
	TT_CHECK(write_text(link, "new\n") == 0);
	TT_CHECK(lstat(link, &st) == 0 && S_ISLNK(st.st_mode));
	TT_CHECK(slurp(target) && strcmp(slurp(target), "new\n") == 0);
	unlink(link);
	unlink(target);
}

static void test_fifo_written_directly(void)
{
	const char *p = in_dir("fifo");
	struct stat st;
	TT_CHECK(mkfifo(p, 0600) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		FILE *f = fopen(p, "r");
		char b[16];
		size_t n = f ? fread(b, 1, sizeof(b), f) : 0;
		_exit(n == 3 && memcmp(b, "abc", 3) == 0 ? 0 : 1);
	}
	TT_CHECK(write_text(p, "abc") == 0);
	int status = -1;
	waitpid(pid, &status, 0);
	TT_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	TT_CHECK(lstat(p, &st) == 0 && S_ISFIFO(st.st_mode));
	unlink(p);
}

static void test_dev_null_stays_a_device(void)
{
	struct stat st;
	TT_CHECK(write_text("/dev/null", "x\n") == 0);
	TT_CHECK(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode));
}

static void test_errors(void)
{
	TT_CHECK(write_text(dir, "x") == -EISDIR);
	TT_CHECK(write_text(in_dir("no/such/dir.json"), "x") == -ENOENT);
	TT_CHECK(write_text("", "x") == -EINVAL);
}

int main(void)
{
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	TT_RUN(test_new_and_replace);
	TT_RUN(test_abort_leaves_old);
	TT_RUN(test_symlink_kept);
	TT_RUN(test_fifo_written_directly);
	TT_RUN(test_dev_null_stays_a_device);
	TT_RUN(test_errors);
	rmdir(dir);
	return TT_DONE();
}
