/* A program that leaves a tapped write without returning from it, then
 * exits normally. Its stdout is a pipe nobody reads, so its writes fill the
 * pipe and the last one blocks inside its system call.
 *   jumpout          a SIGALRM handler siglongjmps out of the blocked write
 *   jumpout again    the same, then a second blocked write left the same way
 *   jumpout cancel   a thread cancelled while blocked in its write
 * Progress goes to stderr. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
static sigjmp_buf env;

static void on_alrm(int s)
{
    (void)s;
    siglongjmp(env, 1);
}

static void *cancel_me(void *a)
{
    (void)a;
    for (;;)
        if (write(1, "cancelled thread line\n", 22) < 0)
            break;
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "cancel")) {
        pthread_t t;
        pthread_create(&t, 0, cancel_me, 0);
        sleep(1);
        pthread_cancel(t);
        pthread_join(t, 0);
        (void)!write(2, "joined\n", 7);
        return 0;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alrm;
    sigaction(SIGALRM, &sa, 0);
    char line[64];
    int n = 0;
    if (sigsetjmp(env, 1) == 0) {
        alarm(1);
        for (;;) {
            int k = snprintf(line, sizeof line, "line %d\n", n++);
            if (write(1, line, (size_t)k) < 0)
                return 3;
        }
    }
    (void)!write(2, "jumped out\n", 11);
    if (!strcmp(mode, "again")) {
        alarm(1);
        if (sigsetjmp(env, 1) == 0)
            (void)!write(1, "again, blocked\n", 15);
        (void)!write(2, "jumped again\n", 13);
    }
    return 0;
}
