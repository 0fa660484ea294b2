/* Process lifecycle cases that change the fd table or end the process
 * behind the library's back: vfork children, daemon(3), one huge write,
 * fd numbers under a low RLIMIT_NOFILE.
 *
 *   lifecycle vfork [closeall]   write, vfork a child that dup2s a pipe
 *                                over fds 1 and 2 (and with `closeall`
 *                                closes every fd from 3) then execs
 *                                /bin/true; then write again to stdout,
 *                                stderr and $LOGFILE
 *   lifecycle vfork-threads N    a thread writes N lines "t I" while the main
 *                                thread vforks 50 children (dup2 over 1 and
 *                                2, exec /bin/true), writing "m I" after each
 *   lifecycle daemon [noclose]   print a line, daemon(3), then write to
 *                                fds 1 and 2 (/dev/null unless noclose),
 *                                then create $LOGDIR/done
 *   lifecycle system             write a line, then system("echo …"), 5 times
 *   lifecycle big N              one write(2) of N pattern bytes to stdout
 *   lifecycle firstfd            write a line, then print the number the
 *                                first open() gets
 *   lifecycle fill               open /dev/null until EMFILE, write a line
 *                                to stdout, print how many opens worked
 *   lifecycle fillfork           open /dev/null until EMFILE, write a line,
 *                                open until EMFILE again, fork a child
 *                                that writes one, then write one more
 *                                after it exited
 *   lifecycle filllog            write "start", open /dev/null until
 *                                EMFILE, close the last, open $LOGFILE (it
 *                                gets that number) and write a line to it,
 *                                3 times
 *   lifecycle noshare PROG ARG…  exec PROG with unshare(2) failing with
 *                                EPERM, as under Docker's seccomp profile
 *   lifecycle vfork-sigchld N    a SIGCHLD handler writes "sigchld"; vfork
 *                                and exec /bin/true N times, then "end"
 *   lifecycle vfork-sigexit      100 lines, then vfork children until the
 *                                SIGCHLD handler writes a line and _exits
 *   lifecycle bigmt N            a thread writes "B-line" lines while the
 *                                main thread writes N bytes of 99-'a'
 *                                lines in one write(2)
 *   lifecycle restart FILE       write "first", wait until FILE exists,
 *                                write "after 0".."after 9"
 *   lifecycle rlimit N           a line, 100 ms, then a thread reads the
 *                                soft RLIMIT_NOFILE in a loop while N
 *                                more lines are written 1 ms
 *                                apart; prints how often it was not the
 *                                value seen at start
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

static void put(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            exit(3);
        }
        s += w;
        n -= (size_t)w;
    }
}

static int logfile(void)
{
    const char *p = getenv("LOGFILE");
    int fd = open(p ? p : "app.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0)
        exit(4);
    return fd;
}

static int do_vfork(int closeall)
{
    int log = logfile();
    put(1, "out before\n");
    put(2, "err before\n");
    put(log, "log before\n");
    int p[2];
    if (pipe(p) != 0)
        return 5;
    pid_t pid = vfork();
    if (pid == 0) {
        /* Only async-signal-safe calls, as in CPython's _posixsubprocess. */
        dup2(p[1], 1);
        dup2(p[1], 2);
        if (closeall)
            closefrom(3);
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
    }
    if (pid < 0)
        return 6;
    close(p[1]);
    char buf[64];
    while (read(p[0], buf, sizeof buf) > 0) {
    }
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    put(1, "out after\n");
    put(2, "err after\n");
    put(log, "log after\n");
    close(log);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 7;
}

static long n_thread_lines;

static void *writer(void *arg)
{
    (void)arg;
    char line[32];
    for (long i = 0; i < n_thread_lines; i++) {
        snprintf(line, sizeof line, "t %ld\n", i);
        put(1, line);
    }
    return NULL;
}

static int do_vfork_threads(long n)
{
    n_thread_lines = n;
    pthread_t th;
    if (pthread_create(&th, NULL, writer, NULL) != 0)
        return 13;
    int devnull = open("/dev/null", O_WRONLY);
    for (int i = 0; i < 50; i++) {
        pid_t pid = vfork();
        if (pid == 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        int st;
        waitpid(pid, &st, 0);
        char line[32];
        snprintf(line, sizeof line, "m %d\n", i);
        put(1, line);
    }
    pthread_join(th, NULL);
    return 0;
}

static int do_daemon(int noclose)
{
    put(1, "starting\n");
    if (daemon(1, noclose) != 0)
        return 8;
    put(1, noclose ? "daemon out\n" : "into /dev/null out\n");
    put(2, noclose ? "daemon err\n" : "into /dev/null err\n");
    char done[4096];
    const char *d = getenv("LOGDIR");
    snprintf(done, sizeof done, "%s/done", d ? d : ".");
    int fd = open(done, O_WRONLY | O_CREAT, 0644);
    if (fd >= 0)
        close(fd);
    return 0;
}

static int do_big(size_t n)
{
    char *b = malloc(n);
    if (!b)
        return 9;
    for (size_t i = 0; i < n; i++)
        b[i] = (char)('!' + (i * 7 + i / 4093) % 90);
    /* One call; the loop only guards against a short write. */
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(1, b + off, n - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return 10;
        }
        off += (size_t)w;
    }
    free(b);
    return 0;
}

static int do_noshare(char **argv)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_unshare, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return 12;
    execvp(argv[0], argv);
    return 127;
}

static void on_sigchld(int s)
{
    (void)s;
    put(1, "sigchld\n");
}

static void on_sigchld_exit(int s)
{
    (void)s;
    put(1, "handler-exit\n");
    _exit(0);
}

static void on(int sig, void (*h)(int), int flags)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = h;
    sa.sa_flags = flags;
    sigaction(sig, &sa, NULL);
}

/* The handler runs in the parent as vfork returns there: its writes are
 * the parent's. */
static int do_vfork_sigchld(long n)
{
    on(SIGCHLD, on_sigchld, SA_RESTART);
    for (long i = 0; i < n; i++) {
        pid_t p = vfork();
        if (p == 0) {
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        while (waitpid(p, NULL, 0) < 0) {
        }
    }
    put(1, "end\n");
    return 0;
}

static int do_vfork_sigexit(void)
{
    on(SIGCHLD, on_sigchld_exit, 0);
    for (int i = 0; i < 100; i++) {
        char b[32];
        snprintf(b, sizeof b, "line %d\n", i);
        put(1, b);
    }
    for (;;) {
        pid_t p = vfork();
        if (p == 0) {
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        pause();
    }
}

static atomic_int stop_flag;

static void *b_lines(void *a)
{
    (void)a;
    while (!atomic_load(&stop_flag)) {
        put(1, "B-line\n");
        usleep(50);
    }
    return NULL;
}

static int do_bigmt(size_t n)
{
    char *b = malloc(n);
    if (!b)
        return 9;
    memset(b, 'a', n);
    for (size_t i = 99; i < n; i += 100)
        b[i] = '\n';
    pthread_t t;
    if (pthread_create(&t, NULL, b_lines, NULL) != 0)
        return 13;
    usleep(20000);
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(1, b + off, n - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return 10;
        }
        off += (size_t)w;
    }
    usleep(20000);
    atomic_store(&stop_flag, 1);
    pthread_join(t, NULL);
    free(b);
    return 0;
}

static int do_restart(const char *go)
{
    put(1, "first\n");
    struct stat st;
    for (int i = 0; stat(go, &st) != 0; i++) {
        if (i > 10000)
            return 14;
        usleep(1000);
    }
    for (int i = 0; i < 10; i++) {
        char b[32];
        snprintf(b, sizeof b, "after %d\n", i);
        put(1, b);
    }
    return 0;
}

static rlim_t start_soft;
static atomic_long other_soft;

static void *watch_limit(void *a)
{
    (void)a;
    while (!atomic_load(&stop_flag)) {
        struct rlimit r;
        getrlimit(RLIMIT_NOFILE, &r);
        if (r.rlim_cur != start_soft)
            atomic_fetch_add(&other_soft, 1);
    }
    return NULL;
}

static int do_rlimit(long n)
{
    /* The first write starts the library's first connect attempt. */
    put(1, "x\n");
    usleep(100 * 1000);
    struct rlimit r;
    getrlimit(RLIMIT_NOFILE, &r);
    start_soft = r.rlim_cur;
    pthread_t t;
    if (pthread_create(&t, NULL, watch_limit, NULL) != 0)
        return 13;
    for (long i = 0; i < n; i++) {
        put(1, "x\n");
        usleep(1000);
    }
    atomic_store(&stop_flag, 1);
    pthread_join(t, NULL);
    char b[64];
    snprintf(b, sizeof b, "other soft limit %ld\n", atomic_load(&other_soft));
    put(2, b);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    const char *m = argv[1];
    if (!strcmp(m, "vfork"))
        return do_vfork(argc > 2 && !strcmp(argv[2], "closeall"));
    if (!strcmp(m, "vfork-threads") && argc > 2)
        return do_vfork_threads(atol(argv[2]));
    if (!strcmp(m, "daemon"))
        return do_daemon(argc > 2 && !strcmp(argv[2], "noclose"));
    if (!strcmp(m, "system")) {
        for (int i = 0; i < 5; i++) {
            char line[64];
            snprintf(line, sizeof line, "parent %d\n", i);
            put(1, line);
            snprintf(line, sizeof line, "echo child %d", i);
            if (system(line) != 0)
                return 11;
        }
        return 0;
    }
    if (!strcmp(m, "big") && argc > 2)
        return do_big(strtoull(argv[2], NULL, 10));
    if (!strcmp(m, "noshare") && argc > 2)
        return do_noshare(argv + 2);
    if (!strcmp(m, "vfork-sigchld") && argc > 2)
        return do_vfork_sigchld(atol(argv[2]));
    if (!strcmp(m, "vfork-sigexit"))
        return do_vfork_sigexit();
    if (!strcmp(m, "bigmt") && argc > 2)
        return do_bigmt(strtoull(argv[2], NULL, 10));
    if (!strcmp(m, "restart") && argc > 2)
        return do_restart(argv[2]);
    if (!strcmp(m, "rlimit") && argc > 2)
        return do_rlimit(atol(argv[2]));
    if (!strcmp(m, "firstfd")) {
        /* A first line, time for the library to connect, then an open. */
        put(1, "first line\n");
        usleep(100 * 1000);
        int fd = open("/dev/null", O_RDONLY);
        printf("%d\n", fd);
        return 0;
    }
    if (!strcmp(m, "fill")) {
        int n = 0;
        while (open("/dev/null", O_RDONLY) >= 0)
            n++;
        int e = errno;
        put(1, "after the fds ran out\n");
        printf("%d %s\n", n, e == EMFILE ? "EMFILE" : strerror(e));
        return 0;
    }
    if (!strcmp(m, "fillfork")) {
        while (open("/dev/null", O_RDONLY) >= 0)
            ;
        put(1, "parent before the fork\n");
        usleep(100 * 1000);
        /* Whatever the library's first open left free, the program takes. */
        while (open("/dev/null", O_RDONLY) >= 0)
            ;
        pid_t pid = fork();
        if (pid < 0)
            return 4;
        if (pid == 0) {
            put(1, "child line\n");
            exit(0);
        }
        int st;
        if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            return 5;
        put(1, "parent after the child\n");
        return 0;
    }
    if (!strcmp(m, "filllog")) {
        const char *log = getenv("LOGFILE");
        int last = -1, fd;
        /* The library's target first (in the fallback fd mode its own
         * opens use the program's table: not while the test counts). */
        put(1, "start\n");
        usleep(100 * 1000);
        while ((fd = open("/dev/null", O_RDONLY)) >= 0)
            last = fd;
        if (!log || last < 0)
            return 4;
        for (int i = 0; i < 3; i++) {
            close(last);
            int l = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (l != last)
                return 5;
            char line[64];
            snprintf(line, sizeof line, "log line %d at fd %d\n", i, l);
            put(l, line);
            close(l);
            if (open("/dev/null", O_RDONLY) != last)
                return 6;
        }
        put(1, "done\n");
        return 0;
    }
    return 2;
}
