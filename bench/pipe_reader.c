/*
 * The container runtime's model of logging, for the benchmark's peer row:
 * the program's stdout is a pipe, and this reader drains it and writes
 * one JSON object per line to its own stdout (a file), as Docker's
 * json-file driver and conmon do:
 *
 *   {"log":"line 0000000042 abc...\n","stream":"stdout","time":"2026-11-30T12:00:00.123456789Z"}
 *
 * Kept as cheap as such a reader can reasonably be: 256 KiB reads, the
 * time read and formatted once per read (every line of a read shares it),
 * escaping by runs (only `"`, `\` and control bytes are rewritten), 1 MiB
 * output writes. A line longer than the read buffer is written in pieces,
 * as Docker splits long lines (those pieces carry no "\n").
 *
 * usage: pipe_reader < pipe > file
 * Build: gcc -O2 -D_FORTIFY_SOURCE=2 -Wall -o pipe_reader pipe_reader.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define IN_SIZE (256 * 1024)
#define OUT_SIZE (1024 * 1024)
/* Room for one input line fully escaped (6 bytes a byte) plus the keys. */
#define OUT_ALLOC (OUT_SIZE + 6 * IN_SIZE + 256)

static char in[IN_SIZE];
static char out[OUT_ALLOC];
static size_t out_len;
static char ts[64];
static size_t ts_len;

static void flush_out(void)
{
    size_t off = 0;
    while (off < out_len) {
        ssize_t w = write(1, out + off, out_len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            _exit(3);
        }
        off += (size_t)w;
    }
    out_len = 0;
}

static void put(const char *p, size_t n)
{
    memcpy(out + out_len, p, n);
    out_len += n;
}

static void stamp(void)
{
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    ts_len = (size_t)snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ",
                              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                              tm.tm_min, tm.tm_sec, now.tv_nsec);
}

/* One record: the bytes p[0..n) of a line, with "\n" when it ended one. */
static void record(const char *p, size_t n, int newline)
{
    static const char hex[] = "0123456789abcdef";
    put("{\"log\":\"", 8);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(p + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': put("\\\"", 2); break;
        case '\\': put("\\\\", 2); break;
        case '\t': put("\\t", 2); break;
        case '\r': put("\\r", 2); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(u, 6);
        }
        }
    }
    put(p + run, n - run);
    if (newline)
        put("\\n", 2);
    put("\",\"stream\":\"stdout\",\"time\":\"", 28);
    put(ts, ts_len);
    put("\"}\n", 3);
    if (out_len >= OUT_SIZE)
        flush_out();
}

int main(void)
{
    size_t have = 0; /* bytes of an unfinished line kept at in[0..have) */
    for (;;) {
        ssize_t r = read(0, in + have, IN_SIZE - have);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return 2;
        }
        if (r == 0)
            break;
        stamp();
        size_t end = have + (size_t)r, start = 0;
        for (;;) {
            char *nl = memchr(in + start, '\n', end - start);
            if (!nl)
                break;
            size_t stop = (size_t)(nl - in);
            record(in + start, stop - start, 1);
            start = stop + 1;
        }
        have = end - start;
        if (have == IN_SIZE) { /* a line longer than the buffer: a piece */
            record(in, have, 0);
            have = 0;
        } else if (start > 0 && have > 0) {
            memmove(in, in + start, have);
        }
    }
    if (have > 0) {
        stamp();
        record(in, have, 0);
    }
    flush_out();
    return 0;
}
