/*
 * Hooks every libc needs that cannot be written in stable Rust because they
 * are variadic: open/openat (the mode), fcntl (the argument) and the execl
 * family. After a successful open the Rust side classifies the new fd.
 *
 * Invariants, as for every hook: the real call's return value and errno,
 * no output of our own, no allocation.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <unistd.h>

#include "shim.h"

/* musl's headers make the LFS64 names macros for the plain ones; the
 * library still exports both, and programs may call either. */
#undef open64
#undef openat64
#undef fcntl64

static void *default_resolve(const char *name) { return dlsym(RTLD_NEXT, name); }
static int default_source(FILE *f) { (void)f; return 0; }
static int default_fd(int fd) { (void)fd; return 0; }
static void default_opened(int fd, int flags, int dirfd, const char *path) { (void)fd, (void)flags, (void)dirfd, (void)path; }
static void default_dup(int a, int b) { (void)a, (void)b; }

struct llt_api llt_api_table = {
    default_resolve, default_source, default_source, NULL, default_opened, default_dup, default_fd,
};

void llt_shim_init(const struct llt_api *a) { llt_api_table = *a; }

/* ---------- opening files ----------
 * open/openat take their mode as a variadic argument. After a successful
 * open the Rust side classifies the new fd: by device and inode, and by the
 * name it was opened under for LLT_TAP_FILE patterns. */

#ifndef O_TMPFILE
#define O_TMPFILE 0
#endif
static int with_mode(int flags) { return (flags & O_CREAT) || (O_TMPFILE && (flags & O_TMPFILE) == O_TMPFILE); }

/* The mode argument, present only when O_CREAT or O_TMPFILE asks for it. */
#define MODE_ARG(flags)                                                        \
    mode_t mode = 0;                                                           \
    if (with_mode(flags)) {                                                    \
        va_list ap;                                                            \
        va_start(ap, flags);                                                   \
        mode = va_arg(ap, mode_t);                                             \
        va_end(ap);                                                            \
    }

#define OPEN_HOOK(name)                                                        \
    HOOK int name(const char *path, int flags, ...)                            \
    {                                                                          \
        MODE_ARG(flags);                                                       \
        REAL(name, int (*)(const char *, int, ...));                           \
        return opened(real_##name(path, flags, mode), flags, AT_FDCWD, path); \
    }
OPEN_HOOK(open)
OPEN_HOOK(open64)

#define OPENAT_HOOK(name)                                                      \
    HOOK int name(int dirfd, const char *path, int flags, ...)                 \
    {                                                                          \
        MODE_ARG(flags);                                                       \
        REAL(name, int (*)(int, const char *, int, ...));                      \
        return opened(real_##name(dirfd, path, flags, mode), flags, dirfd, path); \
    }
OPENAT_HOOK(openat)
OPENAT_HOOK(openat64)

/* fcntl: only F_DUPFD and F_DUPFD_CLOEXEC create fds; the argument is read
 * as a pointer-sized value, which covers both int and pointer commands. */
#define FCNTL_HOOK(name)                                                       \
    HOOK int name(int fd, int cmd, ...)                                        \
    {                                                                          \
        va_list ap;                                                            \
        va_start(ap, cmd);                                                     \
        void *arg = va_arg(ap, void *);                                        \
        va_end(ap);                                                            \
        REAL(name, int (*)(int, int, ...));                                    \
        int r = real_##name(fd, cmd, arg);                                     \
        if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) {            \
            int e = errno;                                                     \
            llt_duplicated(fd, r);                                             \
            errno = e;                                                         \
        }                                                                      \
        return r;                                                              \
    }
FCNTL_HOOK(fcntl)
FCNTL_HOOK(fcntl64)

/* ---------- execl family ----------
 * Collect the arguments and go through execv/execvp/execve, which are
 * hooked (they deliver buffered data before the image is replaced). */

#define COLLECT_ARGS(argv, arg0, ap, n)                                        \
    va_list ap;                                                                \
    size_t n = 1;                                                              \
    va_start(ap, arg0);                                                        \
    while (va_arg(ap, const char *) != NULL)                                   \
        n++;                                                                   \
    va_end(ap);                                                                \
    const char *argv[n + 1];                                                   \
    argv[0] = arg0;                                                            \
    va_start(ap, arg0);                                                        \
    for (size_t i = 1; i <= n; i++)                                            \
        argv[i] = va_arg(ap, const char *);

HOOK int execl(const char *path, const char *arg0, ...)
{
    COLLECT_ARGS(argv, arg0, ap, n)
    va_end(ap);
    return execv(path, (char *const *)argv);
}

HOOK int execlp(const char *file, const char *arg0, ...)
{
    COLLECT_ARGS(argv, arg0, ap, n)
    va_end(ap);
    return execvp(file, (char *const *)argv);
}

HOOK int execle(const char *path, const char *arg0, ...)
{
    COLLECT_ARGS(argv, arg0, ap, n)
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    return execve(path, (char *const *)argv, envp);
}
