/* Writes lines that carry their own origin, for the origin tests:
 *
 *   origin LINES INTERVAL_US CHILDREN
 *
 * The process (and each of CHILDREN forked children, which write the same
 * number of lines at the same pace) writes LINES lines to stdout, one every
 * INTERVAL_US microseconds:
 *
 *   <pid> <seq> <sec>.<nsec>
 *
 * where <pid> is getpid() and <sec>.<nsec> is clock_gettime(CLOCK_REALTIME)
 * read just before the line is written. Even lines go out with write(2),
 * odd ones with fputs + fflush (stdio's own path to the fd). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void lines(long n, long interval_us) {
    pid_t me = getpid();
    char buf[128];
    for (long i = 0; i < n; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int len = snprintf(buf, sizeof buf, "%d %ld %lld.%09ld\n", (int)me, i,
                           (long long)ts.tv_sec, ts.tv_nsec);
        if (i % 2 == 0) {
            if (write(1, buf, (size_t)len) != len)
                exit(3);
        } else {
            fputs(buf, stdout);
            fflush(stdout);
        }
        if (interval_us > 0)
            usleep((useconds_t)interval_us);
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: origin LINES INTERVAL_US CHILDREN\n");
        return 2;
    }
    long n = atol(argv[1]), interval = atol(argv[2]), children = atol(argv[3]);
    fflush(stdout);
    for (long c = 0; c < children; c++) {
        pid_t p = fork();
        if (p < 0)
            return 4;
        if (p == 0) {
            lines(n, interval);
            return 0;
        }
    }
    lines(n, interval);
    int status, bad = 0;
    while (wait(&status) > 0)
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            bad = 1;
    return bad;
}
