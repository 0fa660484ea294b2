/* Opens and closes one file for writing N times and reports the loop's
 * time on stderr, in the writer's format. Under the library with a list of
 * LLT_TAP_FILE patterns that do not match the file, the difference with a
 * run without LLT_TAP_FILE is what matching costs an open. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: opens N PATH\n");
        return 2;
    }
    long n = atol(argv[1]);
    const char *path = argv[2];
    long long t0 = now_ns();
    for (long i = 0; i < n; i++) {
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            perror(path);
            return 1;
        }
        close(fd);
    }
    long long t1 = now_ns();
    fprintf(stderr, "loop_ns=%lld half2_ns=0 hwm_kb=-1 rss_kb=-1\n", t1 - t0);
    return 0;
}
