/* Dies of a signal left at its default action, after writing lines, for
 * tests/signals.rs. Usage: fatal MODE [N]
 *   lines        a line every millisecond until killed (write and stdio)
 *   redefault    the same, after setting a SIGTERM handler and SIG_DFL again
 *   segv N       N lines, then a null pointer store (SIGSEGV)
 *   abort N      N lines, then abort()
 *   raise N      N lines, then raise(SIGABRT) (not through abort)
 *   fpe N        N lines, then an integer division by zero (SIGFPE)
 *   bus N        N lines, then a store past the end of a mapped file (SIGBUS)
 *   fortify N S  N lines, then a fortified strcpy of S into 4 bytes (SIGABRT)
 *   vfork N      N lines, a vfork child that dies of SIGTERM, N lines, SIGTERM
 *   flood        4 KiB write()s flat out until killed
 *   own          its own SIGTERM handler, then lines until killed: exits 3
 *   threads N    two threads write N lines each, then both raise SIGTERM at once
 *   view         prints what sigaction/signal and friends return
 */
#define _GNU_SOURCE
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern void (*bsd_signal(int, void (*)(int)))(int);
extern void (*__sysv_signal(int, void (*)(int)))(int);

static int line_no;
static void h1(int s);

static void one_line(void)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "line %d of pid %d\n", line_no, (int)getpid());
    if (line_no % 2)
        (void)!write(1, buf, n);
    else {
        fputs(buf, stdout);
        fflush(stdout);
    }
    line_no++;
}

static void lines(int n, int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    for (int i = 0; n < 0 || i < n; i++) {
        one_line();
        if (ms)
            nanosleep(&ts, NULL);
    }
}

static void own_handler(int sig)
{
    (void)sig;
    static const char m[] = "caught SIGTERM\n";
    (void)!write(1, m, sizeof m - 1);
    _exit(3);
}

static pthread_barrier_t barrier;

static void *thread_main(void *arg)
{
    int n = *(int *)arg;
    char buf[64];
    for (int i = 0; i < n; i++) {
        int k = snprintf(buf, sizeof buf, "thread %lu line %d\n", (unsigned long)pthread_self() % 1000, i);
        (void)!write(1, buf, k);
    }
    pthread_barrier_wait(&barrier);
    raise(SIGTERM);
    return NULL;
}

/* ---------- view ---------- */

static void h1(int s) { (void)s; }

/* "jumped": a SIGALRM handler that leaves a blocked write the classic way */
static sigjmp_buf out_of_write;
static void jump_out(int s)
{
    (void)s;
    siglongjmp(out_of_write, 1);
}

/* 1 MiB of numbered 100-byte lines */
static char mib[1 << 20];
static void fill_mib(void)
{
    for (size_t i = 0; i < sizeof mib; i += 100)
        snprintf(mib + i, 101, "%-98zu\n", i / 100);
}
static void h2(int s) { (void)s; }

static const char *cls(void (*h)(int))
{
    if (h == SIG_DFL) return "DFL";
    if (h == SIG_IGN) return "IGN";
    if (h == SIG_ERR) return "ERR";
    if (h == SIG_HOLD) return "HOLD";
    if (h == h1) return "h1";
    if (h == h2) return "h2";
    return "OTHER";
}

/* The whole struct as libc left it in a buffer prefilled with 0xa5:
 * handler and restorer by class (their addresses vary between runs), the
 * rest byte for byte. */
static void show_struct(const char *what, int sig, int r, int e, const struct sigaction *a)
{
    printf("%s(%d) = %d errno %d", what, sig, r, e);
    if (r == 0) {
        unsigned long mask0;
        memcpy(&mask0, &a->sa_mask, sizeof mask0);
        printf(" handler %s flags %#x mask0 %#lx restorer %s rest ",
               cls(a->sa_handler), a->sa_flags, mask0,
               a->sa_restorer == NULL ? "null" :
               (unsigned long)a->sa_restorer == 0xa5a5a5a5a5a5a5a5UL ? "untouched" : "set");
        /* glibc copies the whole sigset_t, of which the kernel fills 8
         * bytes: the rest is whatever its stack held, so only the padding
         * after sa_flags is compared (libc leaves it alone). */
        const unsigned char *p = (const unsigned char *)a;
        size_t from = offsetof(struct sigaction, sa_flags) + sizeof a->sa_flags;
        int untouched = 0;
        for (size_t i = from; i < offsetof(struct sigaction, sa_restorer); i++)
            untouched += p[i] == 0xa5;
        printf("%d", untouched);
    }
    printf("\n");
}

static void query(int sig)
{
    struct sigaction a;
    memset(&a, 0xa5, sizeof a);
    errno = 4242;
    int r = sigaction(sig, NULL, &a);
    show_struct("query", sig, r, errno, &a);
}

static void set_act(const char *what, int sig, void (*h)(int), int flags, int masked)
{
    struct sigaction a, o;
    memset(&a, 0, sizeof a);
    memset(&o, 0xa5, sizeof o);
    a.sa_handler = h;
    a.sa_flags = flags;
    sigemptyset(&a.sa_mask);
    if (masked)
        sigaddset(&a.sa_mask, masked);
    errno = 4242;
    int r = sigaction(sig, &a, &o);
    show_struct(what, sig, r, errno, &o);
}

typedef void (*sigfn)(int);
static void call(const char *what, int sig, sigfn (*f)(int, sigfn), sigfn h)
{
    errno = 4242;
    sigfn r = f(sig, h);
    printf("%s(%d, %s) = %s errno %d\n", what, sig, cls(h), cls(r), errno);
}

static void view(void)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGSEGV, SIGABRT,
                               SIGUSR1, SIGALRM, SIGCHLD, SIGWINCH, SIGKILL, SIGSTOP,
                               0, 32, 33, 34, 64, 65, -1};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
        int s = sigs[i];
        query(s);
        set_act("sigaction DFL+flags", s, SIG_DFL, SA_RESTART | SA_NODEFER | 0x00f00000, SIGUSR2);
        query(s);
        call("signal", s, signal, h1);
        query(s);
        call("signal", s, signal, SIG_DFL);
        query(s);
        set_act("sigaction IGN", s, SIG_IGN, 0, 0);
        query(s);
        call("sysv_signal", s, sysv_signal, SIG_DFL);
        query(s);
        call("bsd_signal", s, bsd_signal, h2);
        call("sigset", s, sigset, SIG_DFL);
        query(s);
        call("sigset", s, sigset, SIG_HOLD);
        query(s);
        call("sigset", s, sigset, SIG_DFL);
        errno = 4242;
        printf("siginterrupt(%d, 1) = %d errno %d\n", s, siginterrupt(s, 1), errno);
        query(s);
        errno = 4242;
        printf("siginterrupt(%d, 0) = %d errno %d\n", s, siginterrupt(s, 0), errno);
        query(s);
        call("ssignal", s, ssignal, h1);
        call("__sysv_signal", s, __sysv_signal, SIG_DFL);
        query(s);
        errno = 4242;
        printf("sigignore(%d) = %d errno %d\n", s, sigignore(s), errno);
        query(s);
        set_act("sigaction DFL", s, SIG_DFL, 0, 0);
        set_act("sigaction SIGINFO 0", s, SIG_DFL, SA_SIGINFO, 0);
        query(s);
        set_act("sigaction DFL again", s, SIG_DFL, 0, 0);
        query(s);
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "lines";
    int n = argc > 2 ? atoi(argv[2]) : 10;
    if (!strcmp(mode, "lines")) {
        lines(-1, 1);
    } else if (!strcmp(mode, "redefault")) {
        signal(SIGTERM, h1);
        signal(SIGTERM, SIG_DFL);
        lines(-1, 1);
    } else if (!strcmp(mode, "segv")) {
        lines(n, 0);
        int *volatile null = NULL;
        *(volatile int *)null = 1;
    } else if (!strcmp(mode, "abort")) {
        lines(n, 0);
        abort();
    } else if (!strcmp(mode, "raise")) {
        lines(n, 0);
        raise(SIGABRT);
    } else if (!strcmp(mode, "fpe")) {
        lines(n, 0);
        volatile int zero = 0;
        printf("%d\n", (argc * 1000 + 7) / zero);
    } else if (!strcmp(mode, "bus")) {
        lines(n, 0);
        FILE *f = tmpfile();
        char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fileno(f), 0);
        if (p == MAP_FAILED)
            return 9;
        p[0] = 1;
    } else if (!strcmp(mode, "fortify")) {
        /* glibc's fortify failure aborts through its internal abort */
        lines(n, 0);
        char small[4];
        strcpy(small, argc > 3 ? argv[3] : "x");
        puts(small);
    } else if (!strcmp(mode, "vfork")) {
        /* A vfork child sets SIG_DFL and dies of SIGTERM on the parent's
         * memory; then the parent writes on and dies of SIGTERM too. */
        lines(n, 0);
        pid_t pid = vfork();
        if (pid == 0) {
            signal(SIGTERM, SIG_DFL);
            kill(getpid(), SIGTERM);
            _exit(9);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        printf("child %s %d\n", WIFSIGNALED(st) ? "signal" : "exit",
               WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        fflush(stdout);
        lines(n, 0);
        raise(SIGTERM);
    } else if (!strcmp(mode, "flood")) {
        /* flat out, 4 KiB write()s of numbered lines, until killed */
        char chunk[4096];
        for (long i = 0;;) {
            size_t len = 0;
            while (len + 32 < sizeof chunk)
                len += (size_t)snprintf(chunk + len, sizeof chunk - len, "flood %ld\n", i++);
            (void)!write(1, chunk, len);
        }
    } else if (!strcmp(mode, "bigstdio")) {
        /* flat out, 1 MiB fwrite()s: a short write inside one is retried
         * by stdio itself */
        fill_mib();
        for (;;)
            fwrite(mib, 1, sizeof mib, stdout);
    } else if (!strcmp(mode, "jumped")) {
        /* blocked in a write to a pipe nobody reads, SIGALRM's handler
         * jumps out of it; then waits for a signal (SIGTERM ends it) */
        struct sigaction a;
        memset(&a, 0, sizeof a);
        a.sa_handler = jump_out;
        sigaction(SIGALRM, &a, NULL);
        fill_mib();
        if (!sigsetjmp(out_of_write, 1)) {
            alarm(1);
            for (;;)
                (void)!write(1, mib, sizeof mib);
        }
        fputs("jumped out\n", stderr);
        for (;;)
            pause();
    } else if (!strcmp(mode, "own")) {
        struct sigaction a;
        memset(&a, 0, sizeof a);
        a.sa_handler = own_handler;
        sigaction(SIGTERM, &a, NULL);
        lines(-1, 1);
    } else if (!strcmp(mode, "threads")) {
        pthread_t t[2];
        pthread_barrier_init(&barrier, NULL, 2);
        pthread_create(&t[0], NULL, thread_main, &n);
        pthread_create(&t[1], NULL, thread_main, &n);
        pthread_join(t[0], NULL);
        pthread_join(t[1], NULL);
    } else if (!strcmp(mode, "view")) {
        view();
        return 0;
    }
    return 7;
}
