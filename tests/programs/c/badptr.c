/* Hands output calls a pointer the kernel refuses, for tests/faults.rs.
 * Usage: badptr MODE REPORT
 *
 * Every mode writes "good line 1\n" to stdout, makes its bad call(s),
 * writes "good line 2\n" and exits 0. What each bad call returned (its
 * result and errno, errno set to a sentinel before the call so a clobbered
 * errno after a short count shows too) goes to the file REPORT, opened with
 * open(): neither stdout nor stderr, so never tapped. The test runs each
 * mode with and without liblogtap and requires the same report, the same
 * stdout bytes and the same exit status.
 *
 * A call that must fail (-1, EFAULT) and does not makes the program exit 3
 * after the second good line, with and without the library alike: a kernel
 * that answers otherwise shows in the reference run.
 *
 * Modes (stdout a regular file unless said):
 *   write            write(1, (void *)16, 10): an unmapped low page
 *   write-prot       write(1, p, 100), p a PROT_NONE page
 *   write-partial    write(1, p, 100), the first 50 bytes readable at the
 *                    end of a page, the next page PROT_NONE (the kernel
 *                    may take the 50: recorded, not checked here)
 *   writev-iov       writev(1, (struct iovec *)16, 2): a bad iovec array
 *   writev-base      writev, iov[0] "good a\n", iov[1].iov_base bad (the
 *                    kernel may take iov[0]: recorded)
 *   pwrite           pwrite(1, (void *)16, 10, offset of fd 1)
 *   pwritev-base     pwritev as writev-base, at the offset of fd 1 (moved
 *                    past what it took, so the file stays a stream)
 *   bus              write(1, p, 100), p in a shared mapping of a file
 *                    truncated to 0 after mmap (touching p raises SIGBUS)
 *   blocked          every signal blocked (pthread_sigmask), then `write`
 *   blocked-raw      the same with the raw rt_sigprocmask system call
 *   own-handler      the program's own SIGSEGV handler (sigaction; it
 *                    reports "program handler" and _exit(9)s), then
 *                    `write`: the handler must not run
 *   own-handler-raw  the same handler set with the raw rt_sigaction call
 *   own-handler-crash  the handler, `write`, then a real null store after
 *                    the second good line: the handler runs (exit 9)
 *   crash-after      `write`, then a real null store after the second good
 *                    line: dies of SIGSEGV as it would without the library
 *   thread           `write` from a second thread while the main thread
 *                    writes 200 good lines
 *   fwrite-big       fwrite((void *)16, 1, 1 MiB, stdout) (glibc hands a
 *                    write that large straight to write), fflush, ferror
 *   fwrite-block     the same with one stdio buffer's size (small enough
 *                    for the library's in-flight copy)
 *   send             stdout a socket: send(1, (void *)16, 10, 0)
 *   sendto           stdout a socket: sendto(1, (void *)16, 10, 0, NULL, 0)
 *   sendmsg-base     stdout a socket: sendmsg, iov[0] good, iov[1] bad
 *   sendmsg-iov      stdout a socket: sendmsg, msg_iov (void *)16
 *   sendmsg-hdr      stdout a socket: sendmsg(1, (struct msghdr *)16, 0)
 *   fill             no bad call: 64-byte lines to stdout until killed
 *                    (the test's other premise: with stdout a pipe nobody
 *                    reads, the write blocked when SIGKILL comes reaches
 *                    the sink from its intent slot)
 *   ring             no bad call: reports whether the process maps a shared
 *                    memfd named logtap-ring (the test's premise: the
 *                    library's ring is shared with a socket: target's sink,
 *                    so tapped writes go through its intent slots)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* Not an errno any of the calls sets: still there after a short count
 * unless someone clobbered it. */
#define SENTINEL ENOTRECOVERABLE

static int report_fd = -1;
static int failed;

/* An address the kernel refuses (the lowest page is never mapped); hidden
 * from the optimiser so the compiler neither warns nor assumes. */
static void *bad(void)
{
    void *volatile p = (void *)16;
    return p;
}

static void out_n(const char *s, size_t n)
{
    while (n) {
        ssize_t r = write(1, s, n);
        if (r <= 0) {
            dprintf(report_fd, "good write failed: %zd errno=%d\n", r, errno);
            _exit(4);
        }
        s += r;
        n -= (size_t)r;
    }
}

static void out(const char *s)
{
    out_n(s, strlen(s));
}

/* Records a call's result; with `must_fail`, anything but -1/EFAULT is a
 * failure of the program's expectation. */
static void note(const char *what, ssize_t r, int err, int must_fail)
{
    dprintf(report_fd, "%s: ret=%zd errno=%d (%s)\n", what, r, err,
            err == SENTINEL ? "unchanged" : strerrorname_np(err));
    if (must_fail && (r != -1 || err != EFAULT)) {
        dprintf(report_fd, "%s: UNEXPECTED, want -1 EFAULT\n", what);
        failed = 1;
    }
}

static long page(void)
{
    return sysconf(_SC_PAGESIZE);
}

static void bad_write(const char *what)
{
    errno = SENTINEL;
    ssize_t r = write(1, bad(), 10);
    note(what, r, errno, 1);
}

static void program_handler(int sig)
{
    (void)sig;
    static const char m[] = "program handler\n";
    (void)!write(report_fd, m, sizeof m - 1);
    _exit(9);
}

static void own_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = program_handler;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0) {
        dprintf(report_fd, "sigaction: errno=%d\n", errno);
        _exit(5);
    }
}

/* The kernel's struct sigaction (x86_64, arm64 and most others). */
struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    unsigned long mask;
};

#define KERNEL_SA_RESTORER 0x04000000UL

#if defined(__x86_64__)
/* x86_64 delivers a handler only with a return trampoline (glibc's own is
 * not exported); the handler here never returns, but the kernel checks. */
void badptr_restorer(void);
__asm__(".text\n"
        ".globl badptr_restorer\n"
        ".type badptr_restorer,@function\n"
        "badptr_restorer:\n"
        "    mov $15, %eax\n" /* rt_sigreturn */
        "    syscall\n");
#endif

static void own_handler_raw(void)
{
    struct kernel_sigaction ka = {program_handler, 0, NULL, 0};
#if defined(__x86_64__)
    ka.flags = KERNEL_SA_RESTORER;
    ka.restorer = badptr_restorer;
#endif
    if (syscall(SYS_rt_sigaction, SIGSEGV, &ka, NULL, sizeof ka.mask) != 0) {
        dprintf(report_fd, "rt_sigaction: errno=%d\n", errno);
        _exit(5);
    }
}

/* Read at run time, so the store below is neither removed nor turned
 * into a trap instruction (SIGILL) by the compiler. */
volatile int *volatile crash_at = NULL;

static void crash(void)
{
    *crash_at = 1;
}

/* Two pages, the second PROT_NONE; returns the address `readable` bytes
 * before the second page, those bytes filled with a visible pattern ending
 * in a newline. */
static char *edge(size_t readable)
{
    long pg = page();
    char *m = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m + pg, pg, PROT_NONE) != 0) {
        dprintf(report_fd, "mmap/mprotect: errno=%d\n", errno);
        _exit(5);
    }
    char *p = m + pg - readable;
    for (size_t i = 0; i < readable; i++)
        p[i] = (char)('a' + i % 26);
    p[readable - 1] = '\n';
    return p;
}

static void *thread_main(void *arg)
{
    (void)arg;
    bad_write("thread write");
    return NULL;
}

static void fwrite_bad(const char *what, size_t n)
{
    errno = SENTINEL;
    size_t r = fwrite(bad(), 1, n, stdout);
    int e = errno;
    int err1 = ferror(stdout);
    int f = fflush(stdout);
    int e2 = errno;
    dprintf(report_fd, "%s: fwrite=%zu errno=%d (%s) ferror=%d fflush=%d errno=%d\n",
            what, r, e, e == SENTINEL ? "unchanged" : strerrorname_np(e), err1 != 0,
            f, e2);
    if (r != 0 || e != EFAULT || !err1) {
        dprintf(report_fd, "%s: UNEXPECTED, want 0 items, EFAULT, ferror\n", what);
        failed = 1;
    }
    clearerr(stdout);
}

/* One stdio buffer's size for stdout, as glibc picks it (st_blksize, at
 * most BUFSIZ): a write of a multiple of it goes straight to the kernel. */
static size_t stdio_block(void)
{
    struct stat st;
    if (fstat(1, &st) == 0 && st.st_blksize > 0 && st.st_blksize < BUFSIZ)
        return (size_t)st.st_blksize;
    return BUFSIZ;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: badptr MODE REPORT\n");
        return 2;
    }
    const char *mode = argv[1];
    report_fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (report_fd < 0) {
        perror(argv[2]);
        return 2;
    }
    int crash_at_end = 0;

    out("good line 1\n");

    if (!strcmp(mode, "write")) {
        bad_write("write");
    } else if (!strcmp(mode, "write-prot")) {
        char *p = mmap(NULL, page(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            _exit(5);
        errno = SENTINEL;
        ssize_t r = write(1, p, 100);
        note("write-prot", r, errno, 1);
    } else if (!strcmp(mode, "write-partial")) {
        char *p = edge(50);
        errno = SENTINEL;
        ssize_t r = write(1, p, 100);
        note("write-partial", r, errno, 0);
    } else if (!strcmp(mode, "writev-iov")) {
        errno = SENTINEL;
        ssize_t r = writev(1, (struct iovec *)bad(), 2);
        note("writev-iov", r, errno, 1);
    } else if (!strcmp(mode, "writev-base") || !strcmp(mode, "pwritev-base")) {
        static char a[] = "good a\n";
        struct iovec iov[2] = {{a, sizeof a - 1}, {bad(), 10}};
        /* pwritev at the fd's offset, which it does not move: moved here
         * by what it wrote, so the file stays the stream the target gets. */
        off_t at = lseek(1, 0, SEEK_CUR);
        errno = SENTINEL;
        ssize_t r = mode[0] == 'w' ? writev(1, iov, 2) : pwritev(1, iov, 2, at);
        int e = errno;
        if (mode[0] == 'p' && r > 0)
            lseek(1, r, SEEK_CUR);
        note(mode, r, e, 0);
    } else if (!strcmp(mode, "pwrite")) {
        off_t at = lseek(1, 0, SEEK_CUR);
        errno = SENTINEL;
        ssize_t r = pwrite(1, bad(), 10, at);
        note("pwrite", r, errno, 1);
    } else if (!strcmp(mode, "bus")) {
        long pg = page();
        int fd = open("bus.data", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, pg) != 0)
            _exit(5);
        char *p = mmap(NULL, pg, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED || ftruncate(fd, 0) != 0)
            _exit(5);
        errno = SENTINEL;
        ssize_t r = write(1, p, 100);
        note("bus", r, errno, 1);
    } else if (!strcmp(mode, "blocked")) {
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, NULL);
        bad_write("blocked");
    } else if (!strcmp(mode, "blocked-raw")) {
        unsigned long all = ~0UL;
        if (syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, NULL, sizeof all) != 0)
            _exit(5);
        bad_write("blocked-raw");
    } else if (!strcmp(mode, "own-handler")) {
        own_handler();
        bad_write("own-handler");
    } else if (!strcmp(mode, "own-handler-raw")) {
        own_handler_raw();
        bad_write("own-handler-raw");
    } else if (!strcmp(mode, "own-handler-crash")) {
        own_handler();
        bad_write("own-handler-crash");
        crash_at_end = 1;
    } else if (!strcmp(mode, "crash-after")) {
        bad_write("crash-after");
        crash_at_end = 1;
    } else if (!strcmp(mode, "thread")) {
        pthread_t t;
        if (pthread_create(&t, NULL, thread_main, NULL) != 0)
            _exit(5);
        char buf[64];
        for (int i = 0; i < 200; i++) {
            snprintf(buf, sizeof buf, "main line %d\n", i);
            out(buf);
        }
        pthread_join(t, NULL);
    } else if (!strcmp(mode, "fwrite-big")) {
        /* Before any other stdio output: the stream has no buffer yet, so
         * glibc copies nothing into one and hands the whole write to the
         * kernel. */
        fwrite_bad("fwrite-big", 1 << 20);
    } else if (!strcmp(mode, "fwrite-block")) {
        fwrite_bad("fwrite-block", stdio_block());
    } else if (!strcmp(mode, "send")) {
        errno = SENTINEL;
        ssize_t r = send(1, bad(), 10, 0);
        note("send", r, errno, 1);
    } else if (!strcmp(mode, "sendto")) {
        errno = SENTINEL;
        ssize_t r = sendto(1, bad(), 10, 0, NULL, 0);
        note("sendto", r, errno, 1);
    } else if (!strcmp(mode, "sendmsg-base")) {
        static char a[] = "good a\n";
        struct iovec iov[2] = {{a, sizeof a - 1}, {bad(), 10}};
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = iov;
        m.msg_iovlen = 2;
        errno = SENTINEL;
        ssize_t r = sendmsg(1, &m, 0);
        note("sendmsg-base", r, errno, 0);
    } else if (!strcmp(mode, "sendmsg-iov")) {
        struct msghdr m;
        memset(&m, 0, sizeof m);
        m.msg_iov = (struct iovec *)bad();
        m.msg_iovlen = 2;
        errno = SENTINEL;
        ssize_t r = sendmsg(1, &m, 0);
        note("sendmsg-iov", r, errno, 1);
    } else if (!strcmp(mode, "sendmsg-hdr")) {
        errno = SENTINEL;
        ssize_t r = sendmsg(1, (struct msghdr *)bad(), 0);
        note("sendmsg-hdr", r, errno, 1);
    } else if (!strcmp(mode, "fill")) {
        char buf[65];
        for (unsigned i = 0;; i++) {
            int n = snprintf(buf, sizeof buf, "fill line %010u ", i);
            memset(buf + n, '.', 63 - n);
            buf[63] = '\n';
            out_n(buf, 64);
        }
    } else if (!strcmp(mode, "ring")) {
        FILE *m = fopen("/proc/self/maps", "re");
        char line[512];
        int shared = 0;
        while (m && fgets(line, sizeof line, m))
            if (strstr(line, "memfd:logtap-ring") && strchr(line, ' ') &&
                strchr(line, ' ')[4] == 's')
                shared = 1;
        if (m)
            fclose(m);
        dprintf(report_fd, "shared ring: %s\n", shared ? "yes" : "no");
    } else {
        dprintf(report_fd, "unknown mode %s\n", mode);
        return 2;
    }

    if (!strncmp(mode, "fwrite", 6)) {
        /* Through stdio again, now that the stream is set up. */
        fputs("good line 2\n", stdout);
        fflush(stdout);
    } else {
        out("good line 2\n");
    }
    if (crash_at_end)
        crash();
    return failed ? 3 : 0;
}
