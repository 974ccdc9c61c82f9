/* afile.c: atomic output files; see afile.h. */
#include "util/afile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int afile_open(struct afile *af, const char *path)
{
	struct stat st;
	int fd, rv;

	memset(af, 0, sizeof(*af));
	if (path == NULL || *path == '\0')
		return -EINVAL;
	/* stat() follows links: decide on what the path finally names */
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		if (S_ISDIR(st.st_mode))
			return -EISDIR;
		af->fp = fopen(path, "w");
		if (af->fp == NULL)
			return -errno;
		return 0;
	}
	/* a symlink (possibly dangling): replace its target, keep the link */
	af->target = realpath(path, NULL);
	if (af->target == NULL) {
		if (errno != ENOENT)
			return -errno;
		af->target = strdup(path);
		if (af->target == NULL)
			return -ENOMEM;
	}
	/* same directory as the target, so rename() cannot cross devices */
	if (asprintf(&af->tmp, "%s.tmp.XXXXXX", af->target) < 0) {
		af->tmp = NULL;
		rv = -ENOMEM;
		goto fail;
	}
	fd = mkstemp(af->tmp);
	if (fd < 0) {
		rv = -errno;
		free(af->tmp);
		af->tmp = NULL;
		goto fail;
	}
	/* readable like a file created with open(): 0666 less the umask */
	mode_t mask = umask(0);
	umask(mask);
	(void)fchmod(fd, 0666 & ~mask);
	af->fp = fdopen(fd, "w");
	if (af->fp == NULL) {
		rv = -errno;
		close(fd);
		unlink(af->tmp);
		free(af->tmp);
		af->tmp = NULL;
		goto fail;
	}
	return 0;

fail:
	free(af->target);
	af->target = NULL;
	return rv;
}

int afile_commit(struct afile *af)
{
	int rv = 0;

	if (af->fp == NULL)
		return -EBADF;
	if (fflush(af->fp) != 0 || ferror(af->fp))
		rv = errno ? -errno : -EIO;
	if (rv == 0 && af->tmp != NULL && fsync(fileno(af->fp)) != 0)
		rv = -errno;
	if (fclose(af->fp) != 0 && rv == 0)
		rv = -errno;
	af->fp = NULL;
	if (af->tmp != NULL) {
		if (rv == 0 && rename(af->tmp, af->target) != 0)
			rv = -errno;
		if (rv != 0)
			unlink(af->tmp);
	}
	free(af->tmp);
	free(af->target);
	af->tmp = af->target = NULL;
	return rv;
}

void afile_abort(struct afile *af)
{
	if (af->fp != NULL)
		fclose(af->fp);
	if (af->tmp != NULL)
		unlink(af->tmp);
	free(af->tmp);
	free(af->target);
	memset(af, 0, sizeof(*af));
}
