/*
 * Hooks that cannot be written in stable Rust: everything variadic or
 * taking a va_list (printf family, wide printf, err/warn/error, open,
 * openat, fcntl, execl*). Each one checks the stream or fd with a single
 * table lookup (llt_stream_source) and, when it is not tapped, calls the
 * real function unchanged. When it is tapped, the text is formatted once
 * with vsnprintf (the format is never interpreted twice, so %n and
 * positional arguments behave as in the real call) and handed to the Rust
 * accounting path, llt_stdio_write, which behaves like fwrite.
 *
 * Invariants, as for every hook: errno as the real call leaves it, no
 * output of our own, no allocation on the untapped path.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <err.h>
#include <errno.h>
#include <error.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>


/* The Rust side reads glibc's FILE through its own mirror of the struct;
 * make the build fail if the real header ever disagrees. */
_Static_assert(offsetof(FILE, _flags) == 0, "FILE layout");
_Static_assert(offsetof(FILE, _IO_write_base) == 32, "FILE layout");
_Static_assert(offsetof(FILE, _IO_write_ptr) == 40, "FILE layout");
_Static_assert(offsetof(FILE, _IO_buf_end) == 64, "FILE layout");
_Static_assert(offsetof(FILE, _chain) == 104, "FILE layout");
_Static_assert(offsetof(FILE, _fileno) == 112, "FILE layout");
_Static_assert(offsetof(FILE, _mode) == 192, "FILE layout");

#include "shim.h"

extern int __vsnprintf_chk(char *s, size_t maxlen, int flag, size_t slen, const char *fmt, va_list ap);
extern int __vswprintf_chk(wchar_t *s, size_t n, int flag, size_t slen, const wchar_t *fmt, va_list ap);

/* ---------- narrow printf family ---------- */

/* Formats into a stack buffer, or the heap for long text. flag < 0: plain
 * vsnprintf; otherwise the fortified variant with that flag, so %n in a
 * writable format is refused exactly as __printf_chk refuses it. */
static int format(char *stack, size_t cap, char **out, int flag, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = flag < 0 ? vsnprintf(stack, cap, fmt, ap) : __vsnprintf_chk(stack, cap, flag, cap, fmt, ap);
    *out = stack;
    if (n >= 0 && (size_t)n >= cap) {
        char *heap = malloc((size_t)n + 1);
        if (!heap) {
            va_end(ap2);
            errno = ENOMEM;
            return -1;
        }
        n = flag < 0 ? vsnprintf(heap, (size_t)n + 1, fmt, ap2)
                     : __vsnprintf_chk(heap, (size_t)n + 1, flag, (size_t)n + 1, fmt, ap2);
        *out = heap;
    }
    va_end(ap2);
    return n;
}

static int tapped_vfprintf(FILE *f, int flag, const char *fmt, va_list ap)
{
    char stack[1024], *buf;
    int n = format(stack, sizeof stack, &buf, flag, fmt, ap);
    if (n >= 0 && llt_stdio_write(f, buf, (size_t)n, 0) != (size_t)n)
        n = -1;
    if (buf != stack) {
        int e = errno;
        free(buf);
        errno = e;
    }
    return n;
}

static int do_vfprintf(FILE *f, const char *fmt, va_list ap)
{
    if (llt_stream_source(f) == 0 || llt_stream_wide(f)) {
        REAL(vfprintf, int (*)(FILE *, const char *, va_list));
        return real_vfprintf(f, fmt, ap);
    }
    return tapped_vfprintf(f, -1, fmt, ap);
}

static int do_vfprintf_chk(FILE *f, int flag, const char *fmt, va_list ap)
{
    if (llt_stream_source(f) == 0 || llt_stream_wide(f)) {
        REAL(__vfprintf_chk, int (*)(FILE *, int, const char *, va_list));
        return real___vfprintf_chk(f, flag, fmt, ap);
    }
    return tapped_vfprintf(f, flag, fmt, ap);
}

static int do_vdprintf(int fd, int flag, const char *fmt, va_list ap)
{
    if (!llt_fd_tapped(fd)) {
        if (flag < 0) {
            REAL(vdprintf, int (*)(int, const char *, va_list));
            return real_vdprintf(fd, fmt, ap);
        }
        REAL(__vdprintf_chk, int (*)(int, int, const char *, va_list));
        return real___vdprintf_chk(fd, flag, fmt, ap);
    }
    char stack[1024], *buf;
    int n = format(stack, sizeof stack, &buf, flag, fmt, ap);
    if (n > 0) {
        /* dprintf writes with write(2); ours goes through the write hook. */
        size_t done = 0;
        while (done < (size_t)n) {
            ssize_t w = write(fd, buf + done, (size_t)n - done);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                n = -1;
                break;
            }
            done += (size_t)w;
        }
    }
    if (buf != stack) {
        int e = errno;
        free(buf);
        errno = e;
    }
    return n;
}

HOOK int vfprintf(FILE *f, const char *fmt, va_list ap) { return do_vfprintf(f, fmt, ap); }
HOOK int vprintf(const char *fmt, va_list ap) { return do_vfprintf(stdout, fmt, ap); }
HOOK int __vfprintf_chk(FILE *f, int flag, const char *fmt, va_list ap) { return do_vfprintf_chk(f, flag, fmt, ap); }
HOOK int __vprintf_chk(int flag, const char *fmt, va_list ap) { return do_vfprintf_chk(stdout, flag, fmt, ap); }
HOOK int vdprintf(int fd, const char *fmt, va_list ap) { return do_vdprintf(fd, -1, fmt, ap); }
HOOK int __vdprintf_chk(int fd, int flag, const char *fmt, va_list ap) { return do_vdprintf(fd, flag, fmt, ap); }

#define VARIADIC(call) \
    va_list ap; \
    va_start(ap, fmt); \
    int r = call; \
    va_end(ap); \
    return r

HOOK int printf(const char *fmt, ...) { VARIADIC(do_vfprintf(stdout, fmt, ap)); }
HOOK int fprintf(FILE *f, const char *fmt, ...) { VARIADIC(do_vfprintf(f, fmt, ap)); }
HOOK int dprintf(int fd, const char *fmt, ...) { VARIADIC(do_vdprintf(fd, -1, fmt, ap)); }
HOOK int __printf_chk(int flag, const char *fmt, ...) { VARIADIC(do_vfprintf_chk(stdout, flag, fmt, ap)); }
HOOK int __fprintf_chk(FILE *f, int flag, const char *fmt, ...) { VARIADIC(do_vfprintf_chk(f, flag, fmt, ap)); }
HOOK int __dprintf_chk(int fd, int flag, const char *fmt, ...) { VARIADIC(do_vdprintf(fd, flag, fmt, ap)); }

/* ---------- wide output ----------
 * A tapped stream that is not already wide-oriented stays byte-oriented:
 * wide text is converted with the current locale (what glibc's stream
 * conversion uses) and written through the byte path. The one visible
 * difference, fwide() reporting byte orientation, is in the README. */

static int wide_bytes(FILE *f, const wchar_t *ws, size_t len, int unlocked)
{
    char stack[1024];
    char *buf = stack;
    size_t cap = sizeof stack, n = 0;
    mbstate_t st;
    memset(&st, 0, sizeof st);
    for (size_t i = 0; i < len; i++) {
        if (cap - n < MB_LEN_MAX) {
            size_t ncap = cap * 2;
            char *nb = buf == stack ? malloc(ncap) : realloc(buf, ncap);
            if (!nb) {
                if (buf != stack) free(buf);
                errno = ENOMEM;
                return -1;
            }
            if (buf == stack) memcpy(nb, stack, n);
            buf = nb;
            cap = ncap;
        }
        size_t k = wcrtomb(buf + n, ws[i], &st);
        if (k == (size_t)-1) {
            if (buf != stack) free(buf);
            errno = EILSEQ;
            return -1;
        }
        n += k;
    }
    int r = llt_stdio_write(f, buf, n, unlocked) == n ? (int)len : -1;
    if (buf != stack) {
        int e = errno;
        free(buf);
        errno = e;
    }
    return r;
}

static int wide_tapped(FILE *f) { return llt_stream_source(f) != 0 && !llt_stream_wide(f); }

static int do_vfwprintf(FILE *f, int flag, const wchar_t *fmt, va_list ap)
{
    if (!wide_tapped(f)) {
        if (flag < 0) {
            REAL(vfwprintf, int (*)(FILE *, const wchar_t *, va_list));
            return real_vfwprintf(f, fmt, ap);
        }
        REAL(__vfwprintf_chk, int (*)(FILE *, int, const wchar_t *, va_list));
        return real___vfwprintf_chk(f, flag, fmt, ap);
    }
    wchar_t stack[512];
    wchar_t *buf = stack;
    size_t cap = sizeof stack / sizeof *stack;
    int n;
    for (;;) {
        va_list ap2;
        va_copy(ap2, ap);
        n = flag < 0 ? vswprintf(buf, cap, fmt, ap2) : __vswprintf_chk(buf, cap, flag, cap * sizeof(wchar_t), fmt, ap2);
        va_end(ap2);
        if (n >= 0 || cap >= (1u << 24))
            break;
        /* vswprintf returns -1 when the buffer is too small: grow. */
        cap *= 4;
        wchar_t *nb = buf == stack ? malloc(cap * sizeof *buf) : realloc(buf, cap * sizeof *buf);
        if (!nb) {
            n = -1;
            break;
        }
        buf = nb;
    }
    int r = n < 0 ? -1 : wide_bytes(f, buf, (size_t)n, 0);
    if (buf != stack) {
        int e = errno;
        free(buf);
        errno = e;
    }
    return r;
}

HOOK int vfwprintf(FILE *f, const wchar_t *fmt, va_list ap) { return do_vfwprintf(f, -1, fmt, ap); }
HOOK int vwprintf(const wchar_t *fmt, va_list ap) { return do_vfwprintf(stdout, -1, fmt, ap); }
HOOK int __vfwprintf_chk(FILE *f, int flag, const wchar_t *fmt, va_list ap) { return do_vfwprintf(f, flag, fmt, ap); }
HOOK int __vwprintf_chk(int flag, const wchar_t *fmt, va_list ap) { return do_vfwprintf(stdout, flag, fmt, ap); }
HOOK int fwprintf(FILE *f, const wchar_t *fmt, ...) { VARIADIC(do_vfwprintf(f, -1, fmt, ap)); }
HOOK int wprintf(const wchar_t *fmt, ...) { VARIADIC(do_vfwprintf(stdout, -1, fmt, ap)); }
HOOK int __fwprintf_chk(FILE *f, int flag, const wchar_t *fmt, ...) { VARIADIC(do_vfwprintf(f, flag, fmt, ap)); }
HOOK int __wprintf_chk(int flag, const wchar_t *fmt, ...) { VARIADIC(do_vfwprintf(stdout, flag, fmt, ap)); }

static int do_fputws(const wchar_t *ws, FILE *f, int unlocked)
{
    if (!wide_tapped(f)) {
        if (unlocked) {
            REAL(fputws_unlocked, int (*)(const wchar_t *, FILE *));
            return real_fputws_unlocked(ws, f);
        }
        REAL(fputws, int (*)(const wchar_t *, FILE *));
        return real_fputws(ws, f);
    }
    return wide_bytes(f, ws, wcslen(ws), unlocked) < 0 ? -1 : 1;
}

typedef wint_t (*putwc_fn)(wchar_t, FILE *);

static wint_t do_fputwc(wchar_t c, FILE *f, int unlocked, putwc_fn real)
{
    if (!wide_tapped(f))
        return real(c, f);
    return wide_bytes(f, &c, 1, unlocked) < 0 ? WEOF : (wint_t)c;
}

/* Each hook resolves its own real function once. */
#define PUTWC_HOOK(name, unlocked, stream_expr, ...)                           \
    HOOK wint_t name(__VA_ARGS__)                                              \
    {                                                                          \
        REAL(name, putwc_fn);                                                  \
        return do_fputwc(c, stream_expr, unlocked, real_##name);               \
    }

HOOK int fputws(const wchar_t *ws, FILE *f) { return do_fputws(ws, f, 0); }
HOOK int fputws_unlocked(const wchar_t *ws, FILE *f) { return do_fputws(ws, f, 1); }
PUTWC_HOOK(fputwc, 0, f, wchar_t c, FILE *f)
PUTWC_HOOK(fputwc_unlocked, 1, f, wchar_t c, FILE *f)
PUTWC_HOOK(putwc, 0, f, wchar_t c, FILE *f)
PUTWC_HOOK(putwc_unlocked, 1, f, wchar_t c, FILE *f)
HOOK wint_t putwchar(wchar_t c)
{
    if (!wide_tapped(stdout)) {
        REAL(putwchar, wint_t (*)(wchar_t));
        return real_putwchar(c);
    }
    return do_fputwc(c, stdout, 0, NULL);
}

HOOK wint_t putwchar_unlocked(wchar_t c)
{
    if (!wide_tapped(stdout)) {
        REAL(putwchar_unlocked, wint_t (*)(wchar_t));
        return real_putwchar_unlocked(c);
    }
    return do_fputwc(c, stdout, 1, NULL);
}

/* ---------- diagnostics ----------
 * glibc prints these through internal functions we cannot see. On a tapped
 * stderr we produce the same bytes ourselves, as one write. */

extern char *program_invocation_name;
extern char *program_invocation_short_name;

struct text {
    char stack[1024];
    char *buf;
    size_t len, cap;
};

static void text_init(struct text *t) { t->buf = t->stack, t->len = 0, t->cap = sizeof t->stack, t->stack[0] = 0; }

static void text_add(struct text *t, const char *s, size_t n)
{
    /* Invariant: buf[len] is NUL (room for it is always kept). */
    if (t->len + n + 1 > t->cap) {
        size_t ncap = (t->len + n + 1) * 2;
        char *nb = t->buf == t->stack ? malloc(ncap) : realloc(t->buf, ncap);
        if (!nb)
            return; /* drop this piece; never fail the program for our buffer */
        if (t->buf == t->stack)
            memcpy(nb, t->stack, t->len + 1);
        t->buf = nb, t->cap = ncap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
}

static void text_str(struct text *t, const char *s) { text_add(t, s, strlen(s)); }

static void text_vfmt(struct text *t, const char *fmt, va_list ap)
{
    char stack[1024], *buf;
    int n = format(stack, sizeof stack, &buf, -1, fmt, ap);
    if (n > 0)
        text_add(t, buf, (size_t)n);
    if (buf != stack)
        free(buf);
}

static void text_emit(struct text *t, FILE *f)
{
    llt_stdio_write(f, t->buf, t->len, 1);
    if (t->buf != t->stack)
        free(t->buf);
}

static int stderr_tapped(void) { return wide_tapped(stderr); }

/* warn/err family: "prog: " [message] [": " strerror] "\n" */
static void do_vwarn(const char *fmt, va_list ap, int with_errno)
{
    int saved = errno;
    struct text t;
    text_init(&t);
    text_str(&t, program_invocation_short_name);
    text_str(&t, ": ");
    if (fmt) {
        text_vfmt(&t, fmt, ap);
        if (with_errno)
            text_str(&t, ": ");
    }
    if (with_errno)
        text_str(&t, strerror(saved));
    text_str(&t, "\n");
    flockfile(stderr);
    text_emit(&t, stderr);
    funlockfile(stderr);
    errno = saved;
}

#define REAL_V(name) \
    REAL(name, void (*)(const char *, va_list))

HOOK void vwarn(const char *fmt, va_list ap)
{
    if (!stderr_tapped()) { REAL_V(vwarn); real_vwarn(fmt, ap); return; }
    do_vwarn(fmt, ap, 1);
}
HOOK void vwarnx(const char *fmt, va_list ap)
{
    if (!stderr_tapped()) { REAL_V(vwarnx); real_vwarnx(fmt, ap); return; }
    do_vwarn(fmt, ap, 0);
}
HOOK void verr(int status, const char *fmt, va_list ap) { vwarn(fmt, ap); exit(status); }
HOOK void verrx(int status, const char *fmt, va_list ap) { vwarnx(fmt, ap); exit(status); }
HOOK void warn(const char *fmt, ...) { va_list ap; va_start(ap, fmt); vwarn(fmt, ap); va_end(ap); }
HOOK void warnx(const char *fmt, ...) { va_list ap; va_start(ap, fmt); vwarnx(fmt, ap); va_end(ap); }
HOOK void err(int status, const char *fmt, ...) { va_list ap; va_start(ap, fmt); vwarn(fmt, ap); va_end(ap); exit(status); }
HOOK void errx(int status, const char *fmt, ...) { va_list ap; va_start(ap, fmt); vwarnx(fmt, ap); va_end(ap); exit(status); }

extern unsigned int error_message_count;
extern int error_one_per_line;
extern void (*error_print_progname)(void);

static void do_error(int status, int errnum, const char *file, unsigned int line, const char *fmt, va_list ap)
{
    fflush(stdout);
    flockfile(stderr);
    if (error_print_progname) {
        error_print_progname();
    } else {
        struct text p;
        text_init(&p);
        text_str(&p, program_invocation_name);
        text_str(&p, file ? ":" : ": ");
        text_emit(&p, stderr);
    }
    struct text t;
    text_init(&t);
    if (file) {
        char num[32];
        snprintf(num, sizeof num, ":%u: ", line);
        text_str(&t, file);
        text_str(&t, num);
    }
    text_vfmt(&t, fmt, ap);
    ++error_message_count;
    if (errnum) {
        text_str(&t, ": ");
        text_str(&t, strerror(errnum));
    }
    text_str(&t, "\n");
    text_emit(&t, stderr);
    funlockfile(stderr);
    fflush(stderr);
    if (status)
        exit(status);
}

HOOK void error(int status, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (!stderr_tapped()) {
        struct text t;
        text_init(&t);
        text_vfmt(&t, fmt, ap);

        REAL(error, void (*)(int, int, const char *, ...));
        real_error(status, errnum, "%s", t.buf);
        if (t.buf != t.stack)
            free(t.buf);
    } else {
        do_error(status, errnum, NULL, 0, fmt, ap);
    }
    va_end(ap);
}

HOOK void error_at_line(int status, int errnum, const char *file, unsigned int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (!stderr_tapped()) {
        struct text t;
        text_init(&t);
        text_vfmt(&t, fmt, ap);

        REAL(error_at_line, void (*)(int, int, const char *, unsigned int, const char *, ...));
        real_error_at_line(status, errnum, file, line, "%s", t.buf);
        if (t.buf != t.stack)
            free(t.buf);
    } else {
        static const char *old_file;
        static unsigned int old_line;
        if (error_one_per_line && old_line == line &&
            (file == old_file || (file && old_file && strcmp(file, old_file) == 0))) {
            va_end(ap);
            return;
        }
        old_file = file, old_line = line;
        do_error(status, errnum, file, line, fmt, ap);
    }
    va_end(ap);
}

HOOK void perror(const char *s)
{
    if (!stderr_tapped()) {
        REAL(perror, void (*)(const char *));
        real_perror(s);
        return;
    }
    int saved = errno;
    struct text t;
    text_init(&t);
    if (s && *s) {
        text_str(&t, s);
        text_str(&t, ": ");
    }
    text_str(&t, strerror(saved));
    text_str(&t, "\n");
    flockfile(stderr);
    text_emit(&t, stderr);
    funlockfile(stderr);
    errno = saved;
}

HOOK void psignal(int sig, const char *s)
{
    if (!stderr_tapped()) {
        REAL(psignal, void (*)(int, const char *));
        real_psignal(sig, s);
        return;
    }
    int saved = errno;
    struct text t;
    text_init(&t);
    if (s && *s) {
        text_str(&t, s);
        text_str(&t, ": ");
    }
    text_str(&t, strsignal(sig));
    text_str(&t, "\n");
    flockfile(stderr);
    text_emit(&t, stderr);
    funlockfile(stderr);
    errno = saved;
}

/* ---------- failed assertions ----------
 * glibc prints the message through internal functions, then aborts. On a
 * tapped stderr we print glibc's exact text ourselves; abort() (hooked)
 * then delivers it before the process dies. */

extern const char *__progname;

static void assert_message(const char *what, const char *file, unsigned int line, const char *function)
{
    struct text t;
    char num[32];
    text_init(&t);
    text_str(&t, __progname);
    if (__progname[0])
        text_str(&t, ": ");
    text_str(&t, file);
    snprintf(num, sizeof num, ":%u: ", line);
    text_str(&t, num);
    if (function) {
        text_str(&t, function);
        text_str(&t, ": ");
    }
    text_str(&t, what);
    flockfile(stderr);
    text_emit(&t, stderr);
    funlockfile(stderr);
    fflush(stderr);
    abort();
}

HOOK void __assert_fail(const char *assertion, const char *file, unsigned int line, const char *function)
{
    if (!stderr_tapped()) {
        REAL(__assert_fail, void (*)(const char *, const char *, unsigned int, const char *));
        real___assert_fail(assertion, file, line, function);
        abort();
    }
    struct text t;
    text_init(&t);
    text_str(&t, "Assertion `");
    text_str(&t, assertion);
    text_str(&t, "' failed.\n");
    assert_message(t.buf, file, line, function);
}

HOOK void __assert_perror_fail(int errnum, const char *file, unsigned int line, const char *function)
{
    if (!stderr_tapped()) {
        REAL(__assert_perror_fail, void (*)(int, const char *, unsigned int, const char *));
        real___assert_perror_fail(errnum, file, line, function);
        abort();
    }
    struct text t;
    text_init(&t);
    text_str(&t, "Unexpected error: ");
    text_str(&t, strerror(errnum));
    text_str(&t, ".\n");
    assert_message(t.buf, file, line, function);
}

/* ---------- fortified opens (glibc only) ---------- */

#define OPEN2_HOOK(name)                                                       \
    HOOK int name(const char *path, int flags)                                 \
    {                                                                          \
        REAL(name, int (*)(const char *, int));                                \
        return opened(real_##name(path, flags), flags, AT_FDCWD, path);        \
    }
OPEN2_HOOK(__open_2)
OPEN2_HOOK(__open64_2)

#define OPENAT2_HOOK(name)                                                     \
    HOOK int name(int dirfd, const char *path, int flags)                      \
    {                                                                          \
        REAL(name, int (*)(int, const char *, int));                           \
        return opened(real_##name(dirfd, path, flags), flags, dirfd, path);   \
    }
OPENAT2_HOOK(__openat_2)
OPENAT2_HOOK(__openat64_2)

