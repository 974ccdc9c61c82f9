/*
 * test_resources.c: what report_resources() tells about a process's CPU,
 * memory and contention.
 */
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "measure/report.h"
#include "tt.h"

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double field(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_number(v) ? json_number_value(v) : -1.0;
}

/* The run-queue delay is the time the process was runnable but not
 * running: pinned to one CPU with a spinning sibling, a process that burns
 * 100 ms of CPU waits about as long again for its turns. */
static void test_run_queue_delay_under_contention(void)
{
	cpu_set_t one;
	json_t *before, *after;
	double wait0, wait1, t0;
	volatile uint64_t spin = 0;
	pid_t child;

	CPU_ZERO(&one);
	CPU_SET(sched_getcpu() >= 0 ? sched_getcpu() : 0, &one);
	TT_CHECK(sched_setaffinity(0, sizeof(one), &one) == 0);

	before = report_resources();
	wait0 = field(before, "run_queue_delay_us");
	TT_CHECK(wait0 >= 0); /* the kernel keeps it: a number, not null */
	TT_CHECK(field(before, "max_rss_kib") > 0);
	TT_CHECK(field(before, "cpu_total_s") >= 0);

	child = fork(); /* inherits the affinity: the same CPU */
	TT_CHECK(child >= 0);
	if (child == 0)
		for (;;)
			spin++;
	t0 = cpu_s();
	while (cpu_s() - t0 < 0.1)
		spin++;
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);

	after = report_resources();
	wait1 = field(after, "run_queue_delay_us");
	/* about 100 ms; at least half of it whatever else the machine runs */
	TT_CHECK(wait1 - wait0 >= 50000.0);
	json_decref(before);
	json_decref(after);
}

/* The peak RSS is the process's own: a binary exec'd by a parent that
 * once held 64 MiB reports its own few MiB, not the parent's peak (what
 * getrusage's ru_maxrss would give). */
static void test_peak_rss_not_inherited_across_exec(void)
{
	enum { BIG = 64 << 20 };
	int fds[2];
	char buf[64] = "";
	ssize_t n;
	pid_t child;
	int status;

	TT_CHECK(pipe(fds) == 0);
	child = fork();
	TT_CHECK(child >= 0);
	if (child == 0) {
		char *big = malloc(BIG);

		if (big == NULL)
			_exit(2);
		memset(big, 1, BIG); /* resident: the peak is now above 64 MiB */
		/* used, so the compiler cannot drop the allocation */
		__asm__ volatile("" : : "r"(big) : "memory");
		dup2(fds[1], 1);
		execl("/proc/self/exe", "test_resources", "--peak", (char *)NULL);
		_exit(3);
	}
	close(fds[1]);
	n = read(fds[0], buf, sizeof buf - 1);
	close(fds[0]);
	TT_CHECK(waitpid(child, &status, 0) == child);
	TT_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	TT_CHECK(n > 0);
	/* this test binary on its own stays far below 32 MiB, even with ASan's
	 * shadow mapped (only touched pages count) */
	TT_CHECK(atol(buf) > 0 && atol(buf) < 32 * 1024);
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--peak") == 0) {
		json_t *r = report_resources();

		printf("%.0f\n", field(r, "max_rss_kib"));
		json_decref(r);
		return 0;
	}
	TT_RUN(test_peak_rss_not_inherited_across_exec);
	TT_RUN(test_run_queue_delay_under_contention);
	return TT_DONE();
}
