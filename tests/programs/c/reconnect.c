/* Writes a line (so the connection and its shared ring are set up), then
 * 100 lines, then calls unshare(CLONE_NEWUSER), which makes
 * liblogtap stop its sender and close its connection on purpose, then
 * writes 10 more: reconnect PRE_MS MID_MS GAP_MS (pauses before the
 * lines, before the unshare, after it). */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void line(const char *tag, int i) {
    char b[64];
    int n = snprintf(b, sizeof b, "%s %06d\n", tag, i);
    if (write(1, b, n) != n)
        exit(2);
}

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    line("start", 0);
    usleep(atoi(argv[1]) * 1000);
    for (int i = 0; i < 100; i++)
        line("a", i);
    usleep(atoi(argv[2]) * 1000);
    if (unshare(CLONE_NEWUSER) != 0)
        perror("unshare");
    usleep(atoi(argv[3]) * 1000);
    for (int i = 0; i < 10; i++)
        line("b", i);
    return 0;
}
