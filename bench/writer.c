/*
 * Benchmark writer for logtap: writes LINES lines of 100 bytes (newline
 * included) to stdout and reports on stderr (never tapped by the bench):
 *
 *   loop_ns=N half2_ns=N hwm_kb=N rss_kb=N
 *
 * loop_ns: time spent in the writing loop (CLOCK_MONOTONIC); half2_ns: time
 * of the second half of the lines (the part during which a `stop` pause is
 * active); hwm_kb/rss_kb: VmHWM/VmRSS of the process just before exit.
 *
 * usage: writer MODE LINES [THREADS]
 *   MODE: write   one write(1, line, 100) per line
 *         fputs   fputs(line, stdout) (fully buffered: stdout is not a tty)
 *         printf  printf("line %010ld %s\n", i, filler)
 *         threads THREADS threads (default 8) each write(1, ...) LINES/THREADS lines
 *
 * Environment (optional):
 *   BENCH_OUT=FILE                    modes write and threads: write the
 *                                     lines to FILE (created or truncated)
 *                                     instead of stdout, as a program
 *                                     keeping its own log file does
 *   BENCH_STOP_PID=P BENCH_STOP_MS=M  at the middle line, send SIGSTOP to P
 *                                     and SIGCONT M ms later (from a helper
 *                                     thread): a sink paused mid-run.
 *
 * Build: gcc -O2 -D_FORTIFY_SOURCE=2 -pthread -o writer writer.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define LINE 100

static long lines;
static int nthreads = 8;
static pid_t stop_pid;
static long stop_ms;
static long long t_half;
static int out_fd = 1;

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* "line 0000000042 abc...xyz\n": 100 bytes; digits updated in place. */
static void make_line(char *buf, long i)
{
    int n = snprintf(buf, LINE, "line %010ld ", i);
    for (int k = n; k < LINE - 1; k++)
        buf[k] = 'a' + (k - n) % 26;
    buf[LINE - 1] = '\n';
}

static void set_number(char *buf, long i)
{
    for (int k = 14; k >= 5; k--) {
        buf[k] = '0' + i % 10;
        i /= 10;
    }
}

static void *resume(void *arg)
{
    (void)arg;
    struct timespec ts = {stop_ms / 1000, (stop_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
    kill(stop_pid, SIGCONT);
    return NULL;
}

static void middle(void)
{
    t_half = now_ns();
    if (stop_pid > 0) {
        pthread_t t;
        kill(stop_pid, SIGSTOP);
        if (pthread_create(&t, NULL, resume, NULL) == 0)
            pthread_detach(t);
        else
            kill(stop_pid, SIGCONT);
    }
}

static void write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = write(out_fd, p, n);
        if (r <= 0)
            _exit(3);
        p += r;
        n -= (size_t)r;
    }
}

static void *thread_main(void *arg)
{
    long t = (long)arg;
    long per = lines / nthreads + (t < lines % nthreads);
    char buf[LINE];
    make_line(buf, 0);
    for (long i = 0; i < per; i++) {
        set_number(buf, t * 100000000L + i);
        write_all(buf, LINE);
    }
    return NULL;
}

static long status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "re");
    char row[256];
    long v = -1;
    size_t k = strlen(key);
    if (!f)
        return -1;
    while (fgets(row, sizeof row, f))
        if (strncmp(row, key, k) == 0 && row[k] == ':') {
            v = strtol(row + k + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s write|fputs|printf|threads LINES [THREADS]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    lines = atol(argv[2]);
    if (argc > 3)
        nthreads = atoi(argv[3]);
    if (nthreads < 1)
        nthreads = 1;
    const char *of = getenv("BENCH_OUT");
    if (of && *of) {
        out_fd = open(of, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out_fd < 0) {
            perror(of);
            return 2;
        }
    }
    const char *sp = getenv("BENCH_STOP_PID");
    const char *sm = getenv("BENCH_STOP_MS");
    if (sp && *sp) {
        stop_pid = (pid_t)atol(sp);
        stop_ms = sm ? atol(sm) : 1000;
    }

    char buf[LINE + 1];
    make_line(buf, 0);
    buf[LINE] = 0;
    static const char filler[] =
        "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmn";
    long mid = lines / 2;

    long long t0 = now_ns();
    if (strcmp(mode, "write") == 0) {
        for (long i = 0; i < lines; i++) {
            if (i == mid)
                middle();
            set_number(buf, i);
            write_all(buf, LINE);
        }
    } else if (strcmp(mode, "fputs") == 0) {
        for (long i = 0; i < lines; i++) {
            if (i == mid)
                middle();
            set_number(buf, i);
            fputs(buf, stdout);
        }
        fflush(stdout);
    } else if (strcmp(mode, "printf") == 0) {
        /* 5 + 10 + 1 + 83 + 1 = 100 bytes */
        for (long i = 0; i < lines; i++) {
            if (i == mid)
                middle();
            printf("line %010ld %.83s\n", i, filler);
        }
        fflush(stdout);
    } else if (strcmp(mode, "threads") == 0) {
        pthread_t ts[256];
        if (nthreads > 256)
            nthreads = 256;
        t_half = t0;
        for (long t = 0; t < nthreads; t++)
            pthread_create(&ts[t], NULL, thread_main, (void *)t);
        for (int t = 0; t < nthreads; t++)
            pthread_join(ts[t], NULL);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    long long t1 = now_ns();
    if (t_half == 0)
        t_half = t0;
    dprintf(2, "loop_ns=%lld half2_ns=%lld hwm_kb=%ld rss_kb=%ld\n", t1 - t0, t1 - t_half,
            status_kb("VmHWM"), status_kb("VmRSS"));
    return 0;
}
