/* Ways a program opens, duplicates, rotates and closes its log file, one
 * per mode (argv[1]). LOGFILE is the tap file's absolute path, LOGDIR its
 * directory (also the cwd). Lines that must never reach the target contain
 * "PRIVATE". */
#define _GNU_SOURCE
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static const char *LOG, *DIR_;

static char *path_in_dir(const char *name) {
    static char buf[8][4096];
    static int n;
    char *b = buf[n++ % 8];
    snprintf(b, sizeof buf[0], "%s/%s", DIR_, name);
    return b;
}

static void wr(int fd, const char *s) {
    size_t n = strlen(s);
    if (write(fd, s, n) != (ssize_t)n) err(1, "write fd %d", fd);
}

static void wrf(int fd, const char *fmt, int i) {
    char b[256];
    snprintf(b, sizeof b, fmt, i);
    wr(fd, b);
}

static int open_log(void) {
    int fd = open(LOG, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) err(1, "open log");
    return fd;
}

static int m_open(void) {
    int fd = open_log();
    for (int i = 0; i < 100; i++) wrf(fd, "open line %d\n", i);
    printf("stdout is not the log\n");
    close(fd);
    return 0;
}

static int m_open_nomode(void) {
    close(open_log());
    /* Without a mode: __open_2 / __open64_2 under fortify. */
    int fd = open(LOG, O_WRONLY | O_APPEND);
    if (fd < 0) err(1, "open");
    for (int i = 0; i < 50; i++) wrf(fd, "open without mode %d\n", i);
    close(fd);
    return 0;
}

static int m_open64(void) {
    int fd = open64(LOG, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) err(1, "open64");
    for (int i = 0; i < 50; i++) wrf(fd, "open64 line %d\n", i);
    close(fd);
    FILE *f = fopen64(LOG, "a");
    if (!f) err(1, "fopen64");
    for (int i = 0; i < 50; i++) fprintf(f, "fopen64 line %d\n", i);
    fclose(f);
    return 0;
}

static int m_openat(void) {
    int dfd = open(DIR_, O_RDONLY | O_DIRECTORY);
    if (dfd < 0) err(1, "open dir");
    int fd = openat(dfd, "app.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) err(1, "openat");
    for (int i = 0; i < 50; i++) wrf(fd, "openat line %d\n", i);
    close(fd);
    fd = openat(dfd, "app.log", O_WRONLY | O_APPEND); /* __openat_2 */
    if (fd < 0) err(1, "openat 2");
    for (int i = 0; i < 50; i++) wrf(fd, "openat no mode %d\n", i);
    close(fd);
    fd = openat(AT_FDCWD, "app.log", O_WRONLY | O_APPEND, 0);
    if (fd < 0) err(1, "openat cwd");
    wr(fd, "openat AT_FDCWD\n");
    close(fd);
    close(dfd);
    return 0;
}

static int m_creat(void) {
    int fd = creat(LOG, 0644);
    if (fd < 0) err(1, "creat");
    for (int i = 0; i < 50; i++) wrf(fd, "creat line %d\n", i);
    close(fd);
    return 0;
}

static int m_fopen(void) {
    FILE *f = fopen(LOG, "w");
    if (!f) err(1, "fopen w");
    for (int i = 0; i < 100; i++) fprintf(f, "fopen w line %d\n", i);
    fclose(f);
    f = fopen(LOG, "a");
    if (!f) err(1, "fopen a");
    for (int i = 0; i < 100; i++) {
        fprintf(f, "fopen a line %d\n", i);
        fputs("fputs to log\n", f);
        fwrite("fwrite to log\n", 1, 14, f);
        fputc('c', f);
        putc('\n', f);
    }
    fflush(f);
    fputs("after fflush\n", f);
    fclose(f);
    f = fopen(LOG, "a+");
    if (!f) err(1, "fopen a+");
    fputs("a+ mode\n", f);
    fclose(f);
    return 0;
}

static int m_freopen(void) {
    printf("stdout before freopen\n");
    fflush(stdout);
    if (!freopen(LOG, "a", stdout)) err(1, "freopen");
    for (int i = 0; i < 100; i++) printf("freopened stdout line %d\n", i);
    fflush(stdout);
    fprintf(stderr, "stderr still stderr\n");
    FILE *f = fopen(path_in_dir("other.txt"), "w");
    if (!f) err(1, "fopen other");
    if (!freopen(LOG, "a", f)) err(1, "freopen 2");
    fprintf(f, "freopen of another stream\n");
    fclose(f);
    return 0;
}

static int m_fdopen(void) {
    int fd = open_log();
    FILE *f = fdopen(fd, "a");
    if (!f) err(1, "fdopen");
    for (int i = 0; i < 100; i++) fprintf(f, "fdopen line %d\n", i);
    fclose(f);
    return 0;
}

static int m_chdir_relative(void) {
    if (mkdir("sub", 0755) && errno != EEXIST) err(1, "mkdir");
    if (chdir("sub")) err(1, "chdir");
    int fd = open("../app.log", O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) err(1, "open ../app.log");
    wr(fd, "via ../app.log\n");
    close(fd);
    if (chdir("..")) err(1, "chdir ..");
    fd = open("app.log", O_WRONLY | O_APPEND);
    if (fd < 0) err(1, "open app.log");
    wr(fd, "via app.log\n");
    close(fd);
    FILE *f = fopen("./app.log", "a");
    if (!f) err(1, "fopen ./app.log");
    fputs("via fopen ./app.log\n", f);
    fclose(f);
    return 0;
}

static int m_symlink(void) {
    close(open_log());
    if (symlink(LOG, path_in_dir("link.log"))) err(1, "symlink");
    int fd = open(path_in_dir("link.log"), O_WRONLY | O_APPEND);
    if (fd < 0) err(1, "open link");
    for (int i = 0; i < 20; i++) wrf(fd, "via symlink %d\n", i);
    close(fd);
    FILE *f = fopen("link.log", "a");
    if (!f) err(1, "fopen link");
    fputs("via relative symlink with stdio\n", f);
    fclose(f);
    return 0;
}

static int m_dups(void) {
    int fd = open_log();
    int d1 = dup(fd);
    int d2 = dup2(fd, 50);
    int d3 = dup3(fd, 51, O_CLOEXEC);
    int d4 = fcntl(fd, F_DUPFD, 60);
    int d5 = fcntl(fd, F_DUPFD_CLOEXEC, 70);
    if (d1 < 0 || d2 != 50 || d3 != 51 || d4 < 60 || d5 < 70) err(1, "dup family");
    for (int i = 0; i < 10; i++) {
        wrf(fd, "orig %d\n", i);
        wrf(d1, "dup %d\n", i);
        wrf(d2, "dup2 %d\n", i);
        wrf(d3, "dup3 %d\n", i);
        wrf(d4, "F_DUPFD %d\n", i);
        wrf(d5, "F_DUPFD_CLOEXEC %d\n", i);
    }
    close(fd);
    wr(d1, "dup after close of the original\n");
    close(d1);
    wr(d5, "F_DUPFD_CLOEXEC after closes\n");
    /* A dup of stdout written to is stdout. */
    int so = dup(1);
    wr(so, "dup of stdout\n");
    close(so);
    return 0;
}

static int m_several(void) {
    int a = open_log(), b = open_log(), c = open(LOG, O_WRONLY | O_APPEND);
    FILE *f = fopen(LOG, "a"), *g = fopen(LOG, "a");
    if (c < 0 || !f || !g) err(1, "open several");
    setvbuf(f, NULL, _IONBF, 0);
    setvbuf(g, NULL, _IOLBF, 0);
    for (int i = 0; i < 30; i++) {
        wrf(a, "fd a %d\n", i);
        wrf(b, "fd b %d\n", i);
        wrf(c, "fd c %d\n", i);
        fprintf(f, "FILE f %d\n", i);
        fprintf(g, "FILE g %d\n", i);
    }
    close(b);
    wr(a, "a after b closed\n");
    fclose(f);
    fclose(g);
    close(a);
    close(c);
    return 0;
}

static int m_reopen_per_line(void) {
    for (int i = 0; i < 1000; i++) {
        FILE *f = fopen(LOG, "a");
        if (!f) err(1, "fopen");
        fprintf(f, "reopened for line %d\n", i);
        fclose(f);
    }
    return 0;
}

static int m_rotate(void) {
    int fd = open_log();
    if (dup2(fd, 2) != 2) err(1, "dup2");
    for (int i = 0; i < 100; i++) wrf(fd, "before rotation %d\n", i);
    fprintf(stderr, "stderr (=log) before rotation\n");
    char rotated[4200];
    snprintf(rotated, sizeof rotated, "%s.1", LOG);
    if (rename(LOG, rotated)) err(1, "rename");
    wr(fd, "old fd after rename, still the same file\n");
    /* nginx on USR1: open the path again, dup2 the new fd over the old */
    int nfd = open(LOG, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (nfd < 0) err(1, "reopen");
    if (dup2(nfd, fd) != fd || dup2(nfd, 2) != 2) err(1, "dup2 new");
    close(nfd);
    for (int i = 0; i < 100; i++) wrf(fd, "after rotation %d\n", i);
    fprintf(stderr, "stderr (=new log) after rotation\n");
    return 0;
}

static int m_nginx_stderr(void) {
    fprintf(stderr, "real stderr before dup2\n");
    int fd = open_log();
    if (dup2(fd, 2) != 2) err(1, "dup2");
    close(fd);
    for (int i = 0; i < 50; i++) {
        fprintf(stderr, "nginx style error %d\n", i);
        wrf(2, "raw write(2) %d\n", i);
    }
    errno = ENOENT;
    perror("perror into the log");
    printf("stdout stays stdout\n");
    return 0;
}

static int m_writev_pwrite(void) {
    int fd = open_log();
    struct iovec iov[3] = {{"writev ", 7}, {"to ", 3}, {"log\n", 4}};
    for (int i = 0; i < 20; i++)
        if (writev(fd, iov, 3) != 14) err(1, "writev");
    close(fd);
    fd = open(LOG, O_WRONLY);
    if (fd < 0) err(1, "open");
    struct stat st;
    fstat(fd, &st);
    if (pwrite(fd, "pwrite at end\n", 14, st.st_size) != 14) err(1, "pwrite");
    struct iovec iv[2] = {{"pwritev ", 8}, {"at end\n", 7}};
    if (pwritev(fd, iv, 2, st.st_size + 14) != 15) err(1, "pwritev");
    close(fd);
    struct iovec so[2] = {{"writev ", 7}, {"stdout\n", 7}};
    if (writev(1, so, 2) != 14) err(1, "writev 1");
    return 0;
}

/* fd reuse: after the log fd is closed (in one of several ways), an
 * unrelated file opened on the same number must not be tapped. */
static void reuse_fail(int logfd, int newfd, const char *how) {
    fprintf(stderr, "%s: fd not reused (log %d, new %d)\n", how, logfd, newfd);
    exit(99);
}

/* Opens `name` for writing until the fd number `want` comes back (the
 * library may hold a low number for a moment while it connects; that is
 * tested on its own by the fdnum mode), closing the extra fds. */
static int open_on(const char *name, int want, const char *how) {
    int extra[8], n = 0;
    int fd = open(path_in_dir(name), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    while (fd >= 0 && fd != want && n < 8) {
        extra[n++] = fd;
        usleep(2000);
        fd = open(path_in_dir(name), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    }
    while (n > 0) close(extra[--n]);
    if (fd != want) reuse_fail(want, fd, how);
    return fd;
}

static FILE *fopen_on(const char *name, int want, const char *how) {
    FILE *extra[8];
    int n = 0;
    FILE *f = fopen(path_in_dir(name), "w");
    while (f && fileno(f) != want && n < 8) {
        extra[n++] = f;
        usleep(2000);
        f = fopen(path_in_dir(name), "w");
    }
    while (n > 0) fclose(extra[--n]);
    if (!f || fileno(f) != want) reuse_fail(want, f ? fileno(f) : -1, how);
    return f;
}

/* What open returns right after the library's first tapped write: the
 * lowest free number, as without the library. */
static int m_fdnum(void) {
    int fd = open_log();
    wr(fd, "first tapped write\n");
    close(fd);
    /* Keep opening while the library starts its consumer and connects. */
    int other = 0, first_other = -1;
    for (int i = 0; i < 400; i++) {
        int o = open(path_in_dir("private.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o != fd && other++ == 0) first_other = o;
        close(o);
        usleep(100);
    }
    printf("log fd=%d, later opens on another number: %d (first: %d)\n", fd, other, first_other);
    return 0;
}

static int m_reuse_close(void) {
    int fd = open_log();
    wr(fd, "tapped before close\n");
    close(fd);
    int o = open_on("private.txt", fd, "close");
    for (int i = 0; i < 20; i++) wrf(o, "PRIVATE data on a reused fd %d\n", i);
    close(o);
    return 0;
}

static int m_reuse_fclose(void) {
    FILE *f = fopen(LOG, "a");
    if (!f) err(1, "fopen");
    int n = fileno(f);
    fputs("tapped before fclose\n", f);
    fclose(f);
    FILE *g = fopen_on("private.txt", n, "fclose");
    for (int i = 0; i < 20; i++) fprintf(g, "PRIVATE stdio data %d\n", i);
    fclose(g);
    int o = open_on("private2.txt", n, "fclose+open");
    wr(o, "PRIVATE after fclose with open\n");
    close(o);
    return 0;
}

static int m_reuse_close_range(void) {
    int fd = open_log();
    wr(fd, "tapped before close_range\n");
    if (close_range(fd, fd + 10, 0)) err(1, "close_range");
    int o = open_on("private.txt", fd, "close_range");
    wr(o, "PRIVATE after close_range\n");
    close(o);
    return 0;
}

static int m_reuse_dup2_over(void) {
    int fd = open_log();
    wr(fd, "tapped before dup2 over it\n");
    int o = open(path_in_dir("private.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (o < 0 || dup2(o, fd) != fd) err(1, "dup2 over");
    close(o);
    for (int i = 0; i < 10; i++) wrf(fd, "PRIVATE after dup2 over the log fd %d\n", i);
    close(fd);
    return 0;
}

static int m_reuse_closefrom(void) {
    int fd = open_log();
    wr(fd, "tapped before closefrom\n");
    closefrom(fd);
    int o = open_on("private.txt", fd, "closefrom");
    wr(o, "PRIVATE after closefrom\n");
    close(o);
    return 0;
}

static int m_reuse_raw_syscall(void) {
    int fd = open_log();
    wr(fd, "tapped before raw close syscall\n");
    syscall(SYS_close, fd);
    int o = open_on("private.txt", fd, "SYS_close");
    wr(o, "PRIVATE after raw close syscall\n");
    close(o);
    return 0;
}

static int m_reuse_dup_copy(void) {
    /* A dup of the log, closed, then its number reused by dup2 of /dev/null
     * and by a pipe. */
    int fd = open_log();
    int d = dup(fd);
    wr(d, "tapped via dup\n");
    close(d);
    int p[2];
    if (pipe(p)) err(1, "pipe");
    if (p[0] != d && p[1] != d) {
        fprintf(stderr, "pipe did not reuse %d\n", d);
        return 99;
    }
    wr(p[1], "PRIVATE into a pipe\n");
    char buf[64];
    if (read(p[0], buf, sizeof buf) <= 0) err(1, "read pipe");
    close(p[0]);
    close(p[1]);
    close(fd);
    return 0;
}

struct mode { const char *name; int (*fn)(void); };
static const struct mode modes[] = {
    {"open", m_open}, {"open_nomode", m_open_nomode}, {"open64", m_open64},
    {"openat", m_openat}, {"creat", m_creat}, {"fopen", m_fopen},
    {"freopen", m_freopen}, {"fdopen", m_fdopen},
    {"chdir_relative", m_chdir_relative}, {"symlink", m_symlink},
    {"dups", m_dups}, {"several", m_several},
    {"reopen_per_line", m_reopen_per_line}, {"rotate", m_rotate},
    {"nginx_stderr", m_nginx_stderr}, {"writev_pwrite", m_writev_pwrite},
    {"reuse_close", m_reuse_close}, {"reuse_fclose", m_reuse_fclose},
    {"reuse_close_range", m_reuse_close_range},
    {"reuse_dup2_over", m_reuse_dup2_over}, {"reuse_closefrom", m_reuse_closefrom},
    {"reuse_raw_syscall", m_reuse_raw_syscall}, {"reuse_dup_copy", m_reuse_dup_copy}, {"fdnum", m_fdnum},
};

int main(int argc, char **argv) {
    LOG = getenv("LOGFILE");
    DIR_ = getenv("LOGDIR");
    if (argc < 2 || !LOG || !DIR_) {
        fprintf(stderr, "usage: LOGFILE=.. LOGDIR=.. tapfile MODE\n");
        return 64;
    }
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (!strcmp(argv[1], modes[i].name))
            return modes[i].fn();
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 64;
}
