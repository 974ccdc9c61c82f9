/*
 * afile.h: write an output file so that readers never see half of it.
 *
 * A regular file (or a path that does not exist yet) is written to a
 * temporary file in the same directory, synced, and renamed over the path
 * on commit: a crash leaves either the old file or the new one. A symbolic
 * link is followed, so the file it points to is replaced and the link stays.
 * Anything else that already exists at the path (a character device such as
 * /dev/null or /dev/stdout, a named pipe, a socket) is written to directly:
 * replacing it with a regular file would break the machine or hang its
 * reader.
 *
 * Usage: afile_open(), write to af.fp, then afile_commit() (or afile_abort()
 * to throw the temporary away). Both release everything.
 */
#ifndef AFILE_H
#define AFILE_H

#include <stdio.h>

struct afile {
	FILE *fp;     /* write here */
	char *target; /* final path (the link's target for a symlink) */
	char *tmp;    /* temporary path; NULL when writing directly */
};

/* 0, or -errno with nothing left open or created. */
int afile_open(struct afile *af, const char *path);

/* Flush, sync, rename into place. 0 or -errno (the temporary is removed). */
int afile_commit(struct afile *af);

/* Close and remove the temporary. Safe on a zeroed or closed struct. */
void afile_abort(struct afile *af);

#endif
