/* Writes at scale: one write(2) far larger than the library's buffer, and
 * hundreds of tapped processes alive at once.
 *
 *   scale big N        one write(2) of N bytes to stdout: numbered lines of
 *                      100 bytes, "%09zu " then 89 letters that shift with
 *                      the number, then '\n' (the last line is cut if N is
 *                      not a multiple of 100). Every line differs, so a
 *                      piece delivered twice or out of place shows.
 *       SCALE_STOP_PID=P  a helper thread waits until the write has begun,
 *                         then 10 ms, then sends SIGSTOP to P, sleeps
 *                         SCALE_STOP_MS (default 1000) and sends SIGCONT,
 *                         or SIGKILL with SCALE_STOP_KILL=1
 *       SCALE_WAIT_FILE=F after the write, wait until F exists, then
 *                         write the next line (number N/100) in a write of
 *                         its own (a sink restarted meanwhile then gets a
 *                         write after the big one)
 *                      On stderr (not tapped by the tests):
 *                      "big calls=C stopped_during_write=0|1".
 *   scale fleet N L    starts N children (fork + exec of itself) and keeps
 *                      them all alive at once: each child opens $LOGFILE
 *                      (O_APPEND) and writes L lines to stdout and to it,
 *                      "pid P seq S child I <filler>\n", half before and
 *                      half after every child has started (a pipe closed
 *                      by the parent once all are forked), then tells the
 *                      parent and waits. When all have written, the parent
 *                      prints "all written" on stderr, waits for EOF on its
 *                      stdin, then lets the children exit and reaps them;
 *                      exit 0 if every child exited 0.
 *
 * Build: gcc -O2 -D_FORTIFY_SOURCE=2 -Wall -pthread (tests/common builds it).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LINE 100

static atomic_int writing;   /* 1 while the big write runs, 2 after */
static atomic_int stopped_in; /* the SIGSTOP was sent while writing == 1 */

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void make_line(char *line, size_t i)
{
    int k = snprintf(line, LINE + 1, "%09zu ", i);
    for (; k < LINE - 1; k++)
        line[k] = (char)('a' + (i + (size_t)k) % 26);
    line[LINE - 1] = '\n';
}

static void fill(char *b, size_t n)
{
    for (size_t off = 0, i = 0; off < n; i++, off += LINE) {
        char line[LINE + 1];
        make_line(line, i);
        size_t take = n - off < LINE ? n - off : LINE;
        memcpy(b + off, line, take);
    }
}

static void *stopper(void *arg)
{
    pid_t pid = (pid_t)(long)arg;
    const char *ms = getenv("SCALE_STOP_MS");
    const char *kill_it = getenv("SCALE_STOP_KILL");
    while (atomic_load(&writing) == 0)
        sleep_ms(1);
    sleep_ms(10);
    atomic_store(&stopped_in, atomic_load(&writing) == 1);
    kill(pid, SIGSTOP);
    sleep_ms(ms ? atol(ms) : 1000);
    kill(pid, kill_it && *kill_it == '1' ? SIGKILL : SIGCONT);
    return NULL;
}

static int do_big(size_t n)
{
    char *b = malloc(n ? n : 1);
    if (!b)
        return 9;
    fill(b, n);
    pthread_t t;
    const char *sp = getenv("SCALE_STOP_PID");
    int stopping = sp && *sp;
    if (stopping && pthread_create(&t, NULL, stopper, (void *)(long)atol(sp)) != 0)
        return 11;
    int calls = 0;
    size_t off = 0;
    atomic_store(&writing, 1);
    /* One call; the loop only guards against a short write. */
    while (off < n) {
        ssize_t w = write(1, b + off, n - off);
        calls++;
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return 10;
        }
        off += (size_t)w;
    }
    atomic_store(&writing, 2);
    if (stopping)
        pthread_join(t, NULL);
    free(b);
    const char *wf = getenv("SCALE_WAIT_FILE");
    if (wf && *wf) {
        struct stat st;
        while (stat(wf, &st) != 0)
            sleep_ms(10);
        char line[LINE + 1];
        make_line(line, n / LINE);
        if (write(1, line, LINE) != LINE)
            return 12;
    }
    dprintf(2, "big calls=%d stopped_during_write=%d\n", calls, atomic_load(&stopped_in));
    return 0;
}

/* Reads until EOF (or an error other than EINTR). */
static void wait_eof(int fd)
{
    char c[64];
    for (;;) {
        ssize_t r = read(fd, c, sizeof c);
        if (r == 0 || (r < 0 && errno != EINTR))
            return;
    }
}

static int write_lines(int fd, int idx, long from, long to)
{
    char line[LINE + 1];
    for (long s = from; s < to; s++) {
        int k = snprintf(line, sizeof line, "pid %d seq %ld child %d ", (int)getpid(), s, idx);
        for (; k < 60; k++)
            line[k] = (char)('a' + (s + k) % 26);
        line[k++] = '\n';
        if (write(fd, line, (size_t)k) != k)
            return -1;
    }
    return 0;
}

static int child(int idx, long lines, int start_fd, int done_fd, int release_fd)
{
    const char *path = getenv("LOGFILE");
    int log = open(path ? path : "app.log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0)
        return 20;
    long half = lines / 2;
    if (write_lines(1, idx, 0, half) || write_lines(log, idx, 0, half))
        return 21;
    wait_eof(start_fd);
    if (write_lines(1, idx, half, lines) || write_lines(log, idx, half, lines))
        return 22;
    close(log);
    if (write(done_fd, "x", 1) != 1)
        return 23;
    wait_eof(release_fd);
    return 0;
}

static int fleet(const char *self, int n, long lines)
{
    int start[2], done[2], release[2];
    /* The children keep the read ends (and done's write end) across
     * exec; the ends only the parent holds are close-on-exec, so each
     * child drops them when it execs. */
    if (pipe2(start, 0) || pipe2(done, 0) || pipe2(release, 0))
        return 30;
    fcntl(start[1], F_SETFD, FD_CLOEXEC);
    fcntl(done[0], F_SETFD, FD_CLOEXEC);
    fcntl(release[1], F_SETFD, FD_CLOEXEC);
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    if (!pids)
        return 31;
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0) {
            dprintf(2, "fork %d: %s\n", i, strerror(errno));
            return 32;
        }
        if (p == 0) {
            char a[6][24];
            snprintf(a[0], sizeof a[0], "%d", i);
            snprintf(a[1], sizeof a[1], "%ld", lines);
            snprintf(a[2], sizeof a[2], "%d", start[0]);
            snprintf(a[3], sizeof a[3], "%d", done[1]);
            snprintf(a[4], sizeof a[4], "%d", release[0]);
            char *argv[] = {(char *)self, "child", a[0], a[1], a[2], a[3], a[4], NULL};
            execv("/proc/self/exe", argv);
            _exit(127);
        }
        pids[i] = p;
    }
    close(start[1]);
    close(done[1]);
    for (int got = 0; got < n;) {
        char c[64];
        ssize_t r = read(done[0], c, sizeof c);
        if (r > 0)
            got += (int)r;
        else if (r == 0 || errno != EINTR) {
            dprintf(2, "only %d of %d children wrote everything\n", got, n);
            break;
        }
    }
    dprintf(2, "all written\n");
    wait_eof(0);
    close(release[1]);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int st;
        while (waitpid(pids[i], &st, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            dprintf(2, "child %d (pid %d) ended with status %d\n", i, (int)pids[i], st);
            bad++;
        }
    }
    return bad ? 33 : 0;
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "big"))
        return do_big(strtoull(argv[2], NULL, 10));
    if (argc > 3 && !strcmp(argv[1], "fleet"))
        return fleet(argv[0], atoi(argv[2]), atol(argv[3]));
    if (argc > 6 && !strcmp(argv[1], "child"))
        return child(atoi(argv[2]), atol(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
    dprintf(2, "usage: scale big N | scale fleet N LINES\n");
    return 2;
}
