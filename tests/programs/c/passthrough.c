/* What the program sees must not change under the library: return values
 * and errno of output calls. Results are reported as text (compared with a
 * run without the library). */
#define _GNU_SOURCE
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static char report[16384];
static size_t rlen;

/* Collected in memory, written to stderr at the end (stdout gets closed). */
static void rep(const char *what, long r, int e) {
    rlen += snprintf(report + rlen, sizeof report - rlen, "%s=%ld errno=%d (%s)\n", what, r, e, strerrorname_np(e) ? strerrorname_np(e) : "0");
}

#define CALL(what, expr)          \
    do {                          \
        errno = 0;                \
        long r_ = (long)(expr);   \
        int e_ = errno;           \
        rep(what, r_, e_);        \
    } while (0)

static int m_retvals(void) {
    CALL("write(1,4)", write(1, "abc\n", 4));
    CALL("write(2,4)", write(2, "err\n", 4));
    CALL("write(1,0)", write(1, "", 0));
    struct iovec iov[2] = {{"wri", 3}, {"tev\n", 4}};
    CALL("writev(1)", writev(1, iov, 2));
    CALL("printf", printf("printf %d\n", 12345));
    CALL("fprintf(stderr)", fprintf(stderr, "fprintf %s\n", "e"));
    CALL("puts", puts("puts line"));
    CALL("fputs", fputs("fputs line\n", stdout));
    CALL("fwrite", fwrite("fwrite line\n", 3, 4, stdout));
    CALL("putchar", putchar('P'));
    CALL("fputc", fputc('\n', stdout));
    fflush(stdout); /* keep stdio and fd-level output in call order */
    CALL("dprintf(1)", dprintf(1, "dprintf %d\n", 7));
    CALL("fflush", fflush(stdout));
    CALL("write(42) closed fd", write(42, "x", 1));
    CALL("isatty(1) on a pipe", isatty(1));
    /* errno left by the program must survive output calls */
    errno = EDOM;
    printf("errno survives printf\n");
    rep("errno after printf", 0, errno);
    fflush(stdout);
    errno = ERANGE;
    write(1, "errno survives write\n", 21);
    rep("errno after write", 0, errno);
    errno = EILSEQ;
    fflush(stdout);
    rep("errno after fflush", 0, errno);
    errno = EXDEV;
    fputs("errno survives fputs\n", stderr);
    rep("errno after fputs(stderr)", 0, errno);
    write(2, report, rlen);
    return 0;
}

/* Output to a closed stdout behaves the same with the library. */
static int m_closed_stdout(void) {
    CALL("printf before close", printf("printed before close\n"));
    fflush(stdout);
    CALL("close(1)", close(1));
    CALL("write(1) after close", write(1, "lost\n", 5));
    CALL("printf after close", printf("lost too\n"));
    CALL("fflush after close", fflush(stdout));
    CALL("ferror(stdout)", ferror(stdout) != 0);
    clearerr(stdout);
    CALL("puts after close", puts("lost"));
    CALL("fflush 2", fflush(stdout));
    write(2, report, rlen);
    return 0;
}

/* The tap file is a FIFO opened non-blocking: writes are cut short by a
 * full pipe and then fail with EAGAIN. The target must carry exactly the
 * bytes accepted. */
static int m_nonblock_fifo(void) {
    const char *log = getenv("LOGFILE");
    unlink(log);
    if (mkfifo(log, 0644)) err(1, "mkfifo");
    int fd = open(log, O_RDWR | O_NONBLOCK);
    if (fd < 0) err(1, "open fifo");
    static char buf[10000];
    long total = 0, r = 0;
    int e = 0, partial = 0;
    for (int round = 0; round < 100; round++) {
        for (size_t i = 0; i < sizeof buf; i++) {
            long k = total + (long)i;
            buf[i] = k % 100 == 99 ? '\n' : 'a' + k % 26;
        }
        errno = 0;
        r = write(fd, buf, sizeof buf);
        e = errno;
        if (r < 0) break;
        if (r < (long)sizeof buf) partial++;
        total += r;
    }
    printf("accepted=%ld partial_writes=%d last=%ld errno=%s\n", total, partial, r, strerrorname_np(e) ? strerrorname_np(e) : "0");
    return 0;
}

static void fill_pattern(char *buf, size_t n, long base) {
    for (size_t i = 0; i < n; i++) {
        long k = base + (long)i;
        buf[i] = k % 100 == 99 ? '\n' : 'a' + k % 26;
    }
}

/* Stdout is a pipe nobody reads yet; made non-blocking, writes are
 * cut short when it fills, then fail with EAGAIN. */
static int m_nonblock_stdout_child(void) {
    if (fcntl(1, F_SETFL, fcntl(1, F_GETFL) | O_NONBLOCK)) err(1, "fcntl");
    static char buf[10000];
    long total = 0, r = 0;
    int e = 0, partial = 0;
    for (int round = 0; round < 100; round++) {
        fill_pattern(buf, sizeof buf, total);
        errno = 0;
        r = write(1, buf, sizeof buf);
        e = errno;
        if (r < 0) break;
        if (r < (long)sizeof buf) partial++;
        total += r;
    }
    fprintf(stderr, "accepted=%ld partial_writes=%d last=%ld errno=%s\n", total, partial, r,
            strerrorname_np(e) ? strerrorname_np(e) : "0");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 64;
    if (!strcmp(argv[1], "retvals")) return m_retvals();
    if (!strcmp(argv[1], "nonblock_stdout_child")) return m_nonblock_stdout_child();
    if (!strcmp(argv[1], "closed_stdout")) return m_closed_stdout();
    if (!strcmp(argv[1], "nonblock_fifo")) return m_nonblock_fifo();
    if (!strcmp(argv[1], "isatty")) {
        printf("isatty(1)=%d\n", isatty(1));
        return 0;
    }
    return 64;
}
