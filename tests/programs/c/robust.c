/* Programs that stress the library's process and thread handling. */
#define _GNU_SOURCE
#include <err.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void wait_ok(pid_t p) {
    int st;
    if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "child failed\n");
        exit(3);
    }
}

static int m_fork_children(void) {
    printf("parent start\n");
    fflush(stdout);
    for (int c = 0; c < 4; c++) {
        pid_t p = fork();
        if (p < 0) err(1, "fork");
        if (p == 0) {
            for (int i = 0; i < 200; i++) printf("child %d line %d\n", c, i);
            fprintf(stderr, "child %d stderr\n", c);
            if (c == 3) {
                fflush(stdout);
                _exit(0);
            }
            exit(0);
        }
        wait_ok(p);
        printf("parent after child %d\n", c);
        fflush(stdout);
    }
    printf("parent end\n");
    return 0;
}

static int m_fork_exec(void) {
    printf("parent before exec'ing children\n");
    fflush(stdout);
    pid_t p = fork();
    if (p == 0) {
        execl("/bin/echo", "echo", "from fork+exec /bin/echo", (char *)NULL);
        _exit(127);
    }
    wait_ok(p);
    char *argv[] = {"echo", "from posix_spawn /bin/echo", NULL};
    if (posix_spawn(&p, "/bin/echo", NULL, NULL, argv, environ)) err(1, "posix_spawn");
    wait_ok(p);
    p = vfork();
    if (p == 0) {
        execl("/bin/echo", "echo", "from vfork+exec /bin/echo", (char *)NULL);
        _exit(127);
    }
    wait_ok(p);
    fprintf(stderr, "parent stderr\n");
    if (system("/bin/echo from system") != 0) errx(1, "system");
    printf("parent after children\n");
    return 0;
}

/* The real order is causal (the parent waits for each child): parent line,
 * child line, parent line... */
static int m_order_exec(void) {
    for (int k = 0; k < 5; k++) {
        printf("parent line %d\n", k);
        fflush(stdout);
        fprintf(stderr, "parent stderr %d\n", k);
        pid_t p = fork();
        if (p < 0) err(1, "fork");
        if (p == 0) {
            char arg[32];
            snprintf(arg, sizeof arg, "child line %d", k);
            execl("/bin/echo", "echo", arg, (char *)NULL);
            _exit(127);
        }
        wait_ok(p);
    }
    printf("parent end\n");
    return 0;
}

static void *thread_main(void *arg) {
    long t = (long)arg;
    char b[64];
    for (int i = 0; i < 5000; i++) {
        printf("thread %ld printf line %d\n", t, i);
        if (i % 10 == 0) {
            int n = snprintf(b, sizeof b, "thread %ld write(2) %d\n", t, i);
            write(2, b, n);
        }
    }
    return NULL;
}

static int m_threads(void) {
    pthread_t th[8];
    for (long t = 0; t < 8; t++)
        if (pthread_create(&th[t], NULL, thread_main, (void *)t)) errx(1, "pthread_create");
    for (int t = 0; t < 8; t++) pthread_join(th[t], NULL);
    printf("all threads joined\n");
    return 0;
}

static volatile sig_atomic_t ticks;
static void on_alarm(int sig) {
    (void)sig;
    int saved = errno;
    ticks++;
    write(2, "tick\n", 5);
    errno = saved;
}

static int m_sigalrm(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 50}, {0, 50}};
    setitimer(ITIMER_REAL, &it, NULL);
    char b[64];
    for (int i = 0; i < 50000; i++) {
        printf("printf line %d\n", i);
        int n = snprintf(b, sizeof b, "write line %d\n", i);
        if (write(1, b, n) != n) err(1, "write");
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 64;
    if (!strcmp(argv[1], "fork_children")) return m_fork_children();
    if (!strcmp(argv[1], "fork_exec")) return m_fork_exec();
    if (!strcmp(argv[1], "order_exec")) return m_order_exec();
    if (!strcmp(argv[1], "threads")) return m_threads();
    if (!strcmp(argv[1], "sigalrm")) return m_sigalrm();
    return 64;
}
