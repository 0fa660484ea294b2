/* Opens and closes one file for writing N times and reports the loop's
 * time on stderr, in the writer's format. Under the library with a list of
 * LLT_TAP_FILE patterns that do not match the file, the difference with a
 * run without LLT_TAP_FILE is what matching costs an open. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
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
    /* User-mode CPU time: what matching costs, without the kernel's share
     * of open and close, whose noise on a busy machine dwarfs it. */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long long user_ns = (long long)ru.ru_utime.tv_sec * 1000000000LL + ru.ru_utime.tv_usec * 1000LL;
    fprintf(stderr, "loop_ns=%lld half2_ns=0 hwm_kb=-1 rss_kb=-1 user_ns=%lld\n", t1 - t0, user_ns);
    return 0;
}
