/* Load generator for the transport tests. Every line it writes is
 * "<tag> <seq>\n" so the receiver can check each one arrived exactly once
 * and in order per writer.
 *   stress threads-write T N   T threads, N lines each, write(2)
 *   stress threads-printf T N  T threads, N lines each, printf
 *   stress fork C N            C children, N lines each (printf+fflush)
 *   stress fork-threads T N C  T threads writing N lines while main forks C children
 *   stress sigalrm N           SIGALRM every 50us writes to stderr; main writes N lines (printf and write)
 *   stress lines N [usleep]    N lines with write(2), optional pause between
 *   stress masked-lines N      first blocks every signal to start (and join)
 *                              a thread that ignores SIGPIPE, as GLib and
 *                              many daemons do, then restores its mask and
 *                              writes N lines
 *   stress idle                one line, then sleep 2 s
 *   stress exit-mode MODE N    N lines via printf then leave by return/exit/_exit
 *   stress die abort|assert|quick_exit   one line on stderr, then die that way
 *   stress fullflush           stdout on /dev/full: report what printf+fflush/fseek/fclose return
 *   stress fdchaos N PRIVATE   write N/2 lines, then close every fd >= 3 (close
 *                              loop and close_range), dup2 /dev/null over
 *                              3..1023, open PRIVATE and write "private\n" to
 *                              it, then N/2 more lines
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static long n_lines;
static volatile sig_atomic_t sig_seq;

static void wline(int fd, const char *tag, long i)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%s %ld\n", tag, i);
    if (write(fd, buf, (size_t)n) != n)
        abort();
}

static void *thread_write(void *arg)
{
    char tag[16];
    snprintf(tag, sizeof tag, "t%ld", (long)arg);
    for (long i = 0; i < n_lines; i++)
        wline(1, tag, i);
    return NULL;
}

static void *thread_printf(void *arg)
{
    for (long i = 0; i < n_lines; i++)
        printf("p%ld %ld\n", (long)arg, i);
    return NULL;
}

static void run_threads(int t, void *(*fn)(void *))
{
    pthread_t th[64];
    for (long i = 0; i < t; i++)
        pthread_create(&th[i], NULL, fn, (void *)i);
    for (int i = 0; i < t; i++)
        pthread_join(th[i], NULL);
}

/* A worker started with every signal blocked, setting a disposition as
 * such workers do (curl, GLib). */
static void *idle_thread(void *a)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    return a;
}

static void on_alarm(int sig)
{
    (void)sig;
    char buf[32];
    int v = sig_seq++;
    int n = snprintf(buf, sizeof buf, "sig %d\n", v);
    (void)!write(2, buf, (size_t)n);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return 2;
    const char *mode = argv[1];
    if (!strcmp(mode, "threads-write") || !strcmp(mode, "threads-printf")) {
        n_lines = atol(argv[3]);
        run_threads(atoi(argv[2]), mode[8] == 'w' ? thread_write : thread_printf);
    } else if (!strcmp(mode, "fork")) {
        int c = atoi(argv[2]);
        n_lines = atol(argv[3]);
        for (int k = 0; k < c; k++) {
            fflush(stdout);
            pid_t p = fork();
            if (p == 0) {
                for (long i = 0; i < n_lines; i++)
                    printf("c%d %ld\n", k, i);
                fflush(stdout);
                exit(0);
            }
        }
        while (wait(NULL) > 0)
            ;
    } else if (!strcmp(mode, "fork-threads")) {
        n_lines = atol(argv[3]);
        int c = atoi(argv[4]);
        pthread_t th[64];
        int t = atoi(argv[2]);
        for (long i = 0; i < t; i++)
            pthread_create(&th[i], NULL, thread_write, (void *)i);
        for (int k = 0; k < c; k++) {
            pid_t p = fork();
            if (p == 0) {
                char tag[16];
                snprintf(tag, sizeof tag, "f%d", k);
                for (long i = 0; i < 100; i++)
                    wline(1, tag, i);
                _exit(0);
            }
            usleep(1000);
        }
        for (int i = 0; i < t; i++)
            pthread_join(th[i], NULL);
        while (wait(NULL) > 0)
            ;
    } else if (!strcmp(mode, "sigalrm")) {
        n_lines = atol(argv[2]);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it = {{0, 50}, {0, 50}};
        setitimer(ITIMER_REAL, &it, NULL);
        for (long i = 0; i < n_lines; i++) {
            if (i % 2)
                wline(1, "w", i);
            else {
                printf("w %ld\n", i);
                fflush(stdout);
            }
        }
        struct itimerval off = {{0, 0}, {0, 0}};
        setitimer(ITIMER_REAL, &off, NULL);
        fprintf(stderr, "sigcount %d\n", (int)sig_seq);
    } else if (!strcmp(mode, "masked-lines")) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_t th;
        pthread_create(&th, NULL, idle_thread, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_join(th, NULL);
        n_lines = atol(argv[2]);
        for (long i = 0; i < n_lines; i++)
            wline(1, "l", i);
    } else if (!strcmp(mode, "lines")) {
        long n = atol(argv[2]);
        long pause = argc > 3 ? atol(argv[3]) : 0;
        for (long i = 0; i < n; i++) {
            wline(1, "l", i);
            if (pause)
                usleep((useconds_t)pause);
        }
    } else if (!strcmp(mode, "idle")) {
        wline(1, "idle", 0);
        sleep(2);
    } else if (!strcmp(mode, "exit-mode")) {
        long n = atol(argv[3]);
        for (long i = 0; i < n; i++)
            printf("x %ld\n", i);
        fflush(stdout);
        if (!strcmp(argv[2], "_exit"))
            _exit(0);
        if (!strcmp(argv[2], "exit"))
            exit(0);
        return 0;
    } else if (!strcmp(mode, "die")) {
        wline(2, "last-words", 0);
        if (!strcmp(argv[2], "assert"))
            assert(argc == 99);
        if (!strcmp(argv[2], "quick_exit"))
            quick_exit(3);
        abort();
    } else if (!strcmp(mode, "fullflush")) {
        char line[200];
        printf("one\n");
        int a = fflush(stdout);
        int ea = errno;
        printf("two\n");
        int b = fseek(stdout, 0, SEEK_SET);
        int eb = errno;
        printf("three\n");
        int c = fclose(stdout);
        int ec = errno;
        int n = snprintf(line, sizeof line, "fflush=%d/%d fseek=%d/%d fclose=%d/%d\n", a, ea, b, eb, c, ec);
        (void)!write(2, line, (size_t)n);
        _exit(0);
    } else if (!strcmp(mode, "fdchaos")) {
        long n = atol(argv[2]);
        for (long i = 0; i < n / 2; i++)
            wline(1, "l", i);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        syscall(SYS_close_range, 3U, ~0U, 0);
        int null = open("/dev/null", O_WRONLY);
        for (int fd = 3; fd < 1024; fd++)
            if (fd != null)
                dup2(null, fd);
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        int priv = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (priv < 0 || write(priv, "private\n", 8) != 8)
            return 3;
        for (long i = n / 2; i < n; i++)
            wline(1, "l", i);
        close(priv);
    } else {
        return 2;
    }
    return 0;
}
