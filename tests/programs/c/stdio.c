/* C stdio families, one per mode (argv[1]). Output is deterministic: no
 * pids, addresses, times or paths. LOGFILE names the tap file. */
#define _GNU_SOURCE
#include <err.h>
#include <errno.h>
#include <error.h>
#include <locale.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

static const char *logfile(void) {
    const char *p = getenv("LOGFILE");
    return p ? p : "app.log";
}

static void my_vprintf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
}

static void my_vfprintf(FILE *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
}

static void my_vdprintf(int fd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vdprintf(fd, fmt, ap);
    va_end(ap);
}

/* Keeps the compiler from turning printf into puts with constant strings
 * where a test wants the real printf. */
static volatile int vol_one = 1;

static void big_pattern(char *buf, size_t n, int seed) {
    for (size_t i = 0; i < n; i++)
        buf[i] = (i % 64 == 63) ? '\n' : (char)('a' + (i * 7 + seed) % 26);
}

static int m_printf(void) {
    printf("%s %d %f %x %c %%\n", "str", -42, 3.25, 0xbeef, 'Z');
    printf("%1$s|%2$d|%1$s\n", "pos", 7);
    printf("%-10s|%5.2f|%05d|%lu|%e|%g|%o|%#x\n", "left", 2.5, 42, 123456789UL, 1.5e10, 0.0001, 8, 255);
    printf("x\n");           /* becomes puts */
    printf("%s\n", "y");     /* becomes puts */
    printf("%c", 'c');       /* becomes putchar */
    printf("no newline %d", vol_one);
    printf("\n");
    char big[5000];
    big_pattern(big, sizeof big - 1, 1);
    big[sizeof big - 1] = 0;
    printf("big:%s:end\n", big);
    for (int i = 0; i < 300; i++)
        printf("line %d of printf %*d\n", i, i % 17, i * vol_one);
    return 0;
}

static int m_fprintf(void) {
    for (int i = 0; i < 50; i++) {
        fprintf(stdout, "out %d %s\n", i, "fprintf");
        fprintf(stderr, "err %d %s\n", i, "fprintf");
    }
    fprintf(stdout, "tail without newline %d", vol_one);
    fprintf(stderr, "err tail without newline");
    return 0;
}

static int m_vprintf(void) {
    for (int i = 0; i < 50; i++) {
        my_vprintf("vprintf %d %s %.3f\n", i, "v", i / 3.0);
        my_vfprintf(stdout, "vfprintf(stdout) %d\n", i);
        my_vfprintf(stderr, "vfprintf(stderr) %d %x\n", i, i);
    }
    return 0;
}

static int m_dprintf(void) {
    printf("buffered before dprintf\n");
    fflush(stdout);
    for (int i = 0; i < 20; i++) {
        dprintf(1, "dprintf(1) %d %s\n", i, "d");
        dprintf(2, "dprintf(2) %d\n", i);
        my_vdprintf(1, "vdprintf(1) %d\n", i);
        my_vdprintf(2, "vdprintf(2) %d\n", i);
    }
    return 0;
}

static int m_puts(void) {
    char dyn[64];
    for (int i = 0; i < 40; i++) {
        snprintf(dyn, sizeof dyn, "dynamic %d", i);
        puts("puts constant");
        puts(dyn);
        fputs("fputs constant stdout\n", stdout);
        fputs(dyn, stdout);
        fputs("\n", stdout);
        fputs("fputs constant stderr\n", stderr);
        fputs(dyn, stderr);
        fputs("\n", stderr);
    }
    puts("");
    return 0;
}

static int m_fwrite(void) {
    static const char items[] = "abcdeFGHIJklmno\n";
    for (int i = 0; i < 40; i++) {
        fwrite("fwrite one\n", 1, 11, stdout);
        fwrite(items, 4, 4, stdout);     /* 4 items of 4 bytes */
        fwrite(items, 16, 1, stderr);
        fwrite(items, 1, 16, stderr);
        fwrite(items, 2, 8, stdout);
    }
    fwrite(items, 0, 5, stdout);         /* nothing */
    fwrite(items, 5, 0, stdout);         /* nothing */
    return 0;
}

static int m_putc(void) {
    for (int i = 0; i < 2000; i++) {
        int c = 'A' + i % 26;
        fputc(c, stdout);
        putc(c + 32, stdout);
        putchar(i % 50 == 49 ? '\n' : '.');
        fputc(c, stderr);
        putc(i % 40 == 39 ? '\n' : '-', stderr);
    }
    putchar('\n');
    return 0;
}

static int m_unlocked(void) {
    /* The inlined macros write straight into the FILE buffer and call
     * __overflow only when it is full: > 10 KB forces several. */
    for (int i = 0; i < 30000; i++)
        putc_unlocked(i % 100 == 99 ? '\n' : '0' + i % 10, stdout);
    for (int i = 0; i < 12000; i++)
        putchar_unlocked(i % 80 == 79 ? '\n' : 'a' + i % 26);
    for (int i = 0; i < 3000; i++)
        fputc_unlocked(i % 60 == 59 ? '\n' : 'K', stdout);
    for (int i = 0; i < 100; i++) {
        fputs_unlocked("fputs_unlocked line\n", stdout);
        fwrite_unlocked("fwrite_unlocked!\n", 1, 17, stdout);
        fwrite_unlocked("err_unlocked\n", 13, 1, stderr);
        fputs_unlocked("fputs_unlocked stderr\n", stderr);
        putc_unlocked('!', stderr);
        putc_unlocked('\n', stderr);
    }
    fflush_unlocked(stdout);
    for (int i = 0; i < 11000; i++)
        putc_unlocked(i % 100 == 99 ? '\n' : 'z', stdout);
    return 0;
}

static int m_putw(void) {
    for (int i = 0; i < 100; i++)
        putw(0x0a414243 + i, stdout);
    putw(0x0a0a0a0a, stderr);
    return 0;
}

static int m_wide(void) {
    if (!setlocale(LC_ALL, "C.UTF-8")) {
        fprintf(stderr, "no C.UTF-8 locale\n");
        return 65;
    }
    for (int i = 0; i < 30; i++) {
        wprintf(L"wprintf %d: h\u00e9llo w\u00f6rld %ls\n", i, L"\u2713 \u20ac \u65e5\u672c");
        fputws(L"fputws: \u00fcn\u00efc\u00f6d\u00e9 \u2603\n", stdout);
        fputwc(L'\u20ac', stdout);
        putwc(L'\u00df', stdout);
        putwchar(L'\n');
        fwprintf(stderr, L"fwprintf stderr %d \u00e6\u00f8\u00e5\n", i);
        fputws(L"fputws stderr \u03bb\n", stderr);
        fputwc(L'\u03a9', stderr);
        fputwc(L'\n', stderr);
    }
    return 0;
}

static int m_perror(void) {
    printf("stdout before perror\n");
    errno = ENOENT;
    perror("perror with prefix");
    errno = EACCES;
    perror("");
    errno = EINVAL;
    perror(NULL);
    printf("stdout after perror\n");
    return 0;
}

static int m_warn(void) {
    printf("stdout line before warn\n");
    errno = ENOENT;
    warn("warn %d %s", 1, "one");
    warnx("warnx %d", 2);
    errno = EPERM;
    warn(NULL);
    printf("stdout line after warn\n");
    return 0;
}

static int m_err(void) {
    printf("stdout pending at err\n");
    errno = ENOENT;
    err(4, "err exits with %d", 4);
}

static int m_errx(void) {
    printf("stdout pending at errx\n");
    errx(5, "errx exits with %d", 5);
}

static int m_error(void) {
    printf("stdout pending before error()\n");
    error(0, ENOENT, "error with errno %d", 1);
    error(0, 0, "error without errno %s", "x");
    error_at_line(0, EACCES, "somefile.c", 42, "error_at_line %d", 3);
    printf("stdout after error\n");
    error(3, EPERM, "error exits %d", 3);
    return 0;
}

static int m_psignal(void) {
    psignal(SIGTERM, "psignal TERM");
    psignal(SIGUSR1, NULL);
    psignal(SIGSEGV, "");
    return 0;
}

/* Stdout is a pipe: fully buffered, nothing is written before exit. */
static void unflushed(void) {
    for (int i = 0; i < 200; i++)
        printf("pending stdout line %d\n", i);
    printf("no newline at the very end");
    FILE *f = fopen(logfile(), "a");
    if (!f) err(1, "fopen log");
    for (int i = 0; i < 100; i++)
        fprintf(f, "pending log line %d\n", i);
    /* neither fclose nor fflush: exit must flush */
}

static int m_exit_unflushed(void) {
    unflushed();
    exit(0);
}

static int m_return_unflushed(void) {
    unflushed();
    return 0;
}

static int m__exit(void) {
    write(1, "written by write before _exit\n", 30);
    printf("buffered, discarded by _exit\n");
    _exit(0);
}

static int m_big(void) {
    size_t n = 1 << 20;
    char *b = malloc(n);
    big_pattern(b, n, 3);
    if (fwrite(b, 1, n, stdout) != n) return 1;
    big_pattern(b, n, 5);
    fwrite(b, 1, 200000, stderr);
    FILE *f = fopen(logfile(), "w");
    if (!f) err(1, "fopen");
    big_pattern(b, n, 9);
    fwrite(b, 4096, n / 4096, f);
    fclose(f);
    free(b);
    return 0;
}

static int m_linebuf(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < 100; i++) {
        printf("line-buffered %d", i);
        write(1, "[w]", 3);
        printf(" end\n");
    }
    return 0;
}

static int m_fullbuf_small(void) {
    static char b1[100], b2[37];
    setvbuf(stdout, b1, _IOFBF, sizeof b1);
    setvbuf(stderr, b2, _IOFBF, sizeof b2);
    for (int i = 0; i < 300; i++) {
        printf("fully buffered 100-byte buffer, line %d\n", i);
        fprintf(stderr, "stderr in a 37-byte buffer %d\n", i);
    }
    return 0;
}

/* glibc writes straight to the fd, in the pieces printf produces, when a
 * piece does not fit a buffer smaller than 128 bytes: a write(1) between
 * two printf calls lands between those pieces. */
static int m_tiny_buffer_chunks(void) {
    /* Under 128 bytes glibc writes what does not fit straight to the fd.
     * printf is not used here: on so small a buffer glibc writes each
     * piece of a format separately, the library each printf whole (see the
     * README's Limits). */
    static char b1[100];
    setvbuf(stdout, b1, _IOFBF, sizeof b1);
    char line[256];
    for (int i = 0; i < 20; i++) {
        snprintf(line, sizeof line, "tiny buffer, line %d %s\n", i, i % 3 ? "" : "with a tail long enough to exceed the whole tiny buffer of this stream");
        fputs(line, stdout);
        write(1, "<write>\n", 8);
    }
    return 0;
}

static int m_unbuffered(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    for (int i = 0; i < 100; i++) {
        printf("unbuffered %d ", i);
        putchar('|');
        puts("x");
        write(1, "w\n", 2);
    }
    return 0;
}

static int m_bigbuf(void) {
    /* A buffer larger than any scratch area the library may use. */
    static char b[1 << 20];
    setvbuf(stdout, b, _IOFBF, sizeof b);
    for (int i = 0; i < 30000; i++)
        printf("big own buffer line %d\n", i);
    write(1, "direct write in the middle\n", 27);
    for (int i = 0; i < 30000; i++)
        printf("after direct write %d\n", i);
    return 0;
}

static int m_mix_noflush(void) {
    for (int i = 0; i < 100; i++) {
        printf("printf %d\n", i);
        write(1, "write\n", 6);
        fprintf(stderr, "stderr %d\n", i);
        write(2, "write2\n", 7);
    }
    return 0;
}

static int m_mix_flush(void) {
    for (int i = 0; i < 100; i++) {
        printf("printf %d\n", i);
        fflush(stdout);
        write(1, "write\n", 6);
        fprintf(stderr, "stderr %d", i);
        write(2, "|write2\n", 8);
    }
    return 0;
}

static int m_stdout_only(void) {
    for (int i = 0; i < 10; i++)
        printf("stdout only %d\n", i);
    return 0;
}

struct mode { const char *name; int (*fn)(void); };
static const struct mode modes[] = {
    {"printf", m_printf}, {"fprintf", m_fprintf}, {"vprintf", m_vprintf},
    {"dprintf", m_dprintf}, {"puts", m_puts}, {"fwrite", m_fwrite},
    {"putc", m_putc}, {"unlocked", m_unlocked}, {"putw", m_putw},
    {"wide", m_wide}, {"perror", m_perror}, {"warn", m_warn}, {"err", m_err},
    {"errx", m_errx}, {"error", m_error}, {"psignal", m_psignal},
    {"exit_unflushed", m_exit_unflushed}, {"return_unflushed", m_return_unflushed},
    {"_exit", m__exit}, {"big", m_big}, {"linebuf", m_linebuf},
    {"fullbuf_small", m_fullbuf_small}, {"tiny_buffer_chunks", m_tiny_buffer_chunks}, {"unbuffered", m_unbuffered},
    {"bigbuf", m_bigbuf}, {"mix_noflush", m_mix_noflush},
    {"mix_flush", m_mix_flush}, {"stdout_only", m_stdout_only},
};

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: stdio MODE\n");
        return 64;
    }
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (!strcmp(argv[1], modes[i].name))
            return modes[i].fn();
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 64;
}
