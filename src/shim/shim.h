/* Shared by the C shims: the Rust functions they call. Rust hands them over
 * in its constructor (llt_shim_init) instead of exporting them, so the
 * library's symbol table holds nothing but the hooks. Until then the
 * defaults in common.c treat nothing as tapped. */
#ifndef LOGTAP_SHIM_H
#define LOGTAP_SHIM_H

#include <errno.h>
#include <stddef.h>
#include <stdio.h>

#define HOOK __attribute__((visibility("default")))

struct llt_api {
    void *(*resolve)(const char *name);
    int (*stream_source)(FILE *f);
    int (*stream_wide)(FILE *f);
    size_t (*stdio_write)(FILE *f, const char *data, size_t len, int unlocked);
    void (*opened)(int fd, int flags, int dirfd, const char *path);
    void (*duplicated)(int oldfd, int newfd);
    int (*fd_tapped)(int fd);
};

extern struct llt_api llt_api_table;

#define llt_resolve(n) llt_api_table.resolve(n)
#define llt_stream_source(f) llt_api_table.stream_source(f)
#define llt_stream_wide(f) llt_api_table.stream_wide(f)
#define llt_stdio_write(f, d, l, u) llt_api_table.stdio_write(f, d, l, u)
#define llt_opened(fd, fl, dfd, p) llt_api_table.opened(fd, fl, dfd, p)
#define llt_duplicated(a, b) llt_api_table.duplicated(a, b)
#define llt_fd_tapped(fd) llt_api_table.fd_tapped(fd)

/* Resolves the real function once and caches it in a local static. */
#define REAL(name, type) \
    static __typeof__(type) real_##name; \
    if (!real_##name) real_##name = (type)llt_resolve(#name)

/* After an open: classify the new fd, keeping the caller's errno. The name
 * it was opened under (relative to dirfd) is what LLT_TAP_FILE patterns
 * are matched against. */
static inline int opened(int fd, int flags, int dirfd, const char *path)
{
    if (fd >= 0) {
        int e = errno;
        llt_opened(fd, flags, dirfd, path);
        errno = e;
    }
    return fd;
}

#endif
