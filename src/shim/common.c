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
#include <sys/syscall.h>
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

/* ---------- vfork ----------
 * A vfork child runs on its parent's memory, on the calling thread's stack
 * and thread-local storage, until it execs or exits; the parent's thread
 * waits meanwhile (its other threads do not). The child's dup2/close/open
 * must not rewrite the parent's fd table state, so the hooks have to know
 * they run in one.
 *
 * `llt_vfork_tid`, thread-local, holds the calling thread's id while a
 * vfork is in progress on it (set before the system call, cleared after
 * the parent's side returns; 0 otherwise). The child runs with that same
 * storage but is another task: it is told apart by its thread id. The
 * parent's thread can run code with the value set too (a SIGCHLD handler
 * delivered as the system call returns, before the value is cleared), and
 * there the ids match: the parent stays the parent. Reading the id costs a
 * system call only while a vfork is in progress on the thread. A handler
 * that itself vforks in that window nests: the depth counts them. Other
 * threads of the parent have their own, still clear, values.
 *
 * vfork cannot be wrapped by a C function: the child would return through
 * the wrapper's frame and leave the parent a clobbered one. Like libc's
 * own, this one is assembly that keeps its return address in a register
 * across the system call.
 *
 * Control-flow protection: the library is not marked for a shadow stack
 * (x86 CET SHSTK, arm64 GCS) or branch targets (IBT, BTI) — its Rust
 * objects carry no such property — so the loader never enables them for a
 * process that loads it, and nothing here depends on them. Still, the
 * child goes back to its caller with an indirect jump, not a return: a
 * return would pop the shadow stack the child shares with its parent, and
 * the child's next call would overwrite the entry the parent's return is
 * checked against. On arm64 the child returns with `ret`: an indirect
 * `br` into a program whose pages are BTI-guarded (Debian builds them so)
 * would fault, and arm64's shadow stack (GCS) is enabled only when every
 * loaded object is marked for it, which this library is not. The entry
 * starts with `bti c` (a no-op on cores without BTI). */

__attribute__((visibility("hidden"), tls_model("initial-exec"))) __thread long llt_vfork_tid;
__attribute__((visibility("hidden"), tls_model("initial-exec"))) __thread int llt_vfork_depth;

/* gettid(2) without libc's wrapper (absent from older glibc and musl). */
static long raw_gettid(void)
{
    int e = errno;
    long t = syscall(SYS_gettid);
    errno = e;
    return t;
}

__attribute__((visibility("hidden"), used)) void llt_vfork_begin(void)
{
    if (llt_vfork_depth++ == 0)
        llt_vfork_tid = raw_gettid();
}
__attribute__((visibility("hidden"), used)) void llt_vfork_end(void)
{
    if (--llt_vfork_depth == 0)
        llt_vfork_tid = 0;
}
/* The failed system call's result (-errno) as libc reports it. */
__attribute__((visibility("hidden"), used)) long llt_vfork_fail(long neg)
{
    llt_vfork_end();
    errno = (int)-neg;
    return -1;
}
__attribute__((visibility("hidden"))) int llt_in_vfork_child(void)
{
    long t = llt_vfork_tid;
    return t != 0 && raw_gettid() != t;
}

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl vfork\n"
        ".type vfork,@function\n"
        "vfork:\n"
        "  endbr64\n"
        "  sub $8, %rsp\n"
        "  call llt_vfork_begin\n"
        "  add $8, %rsp\n"
        "  pop %rdi\n"                /* the return address, kept in a register */
        "  mov $58, %eax\n"           /* SYS_vfork */
        "  syscall\n"
        "  test %rax, %rax\n"
        "  jnz 1f\n"
        "  jmp *%rdi\n"               /* the child: back to the caller (see above) */
        "1: push %rdi\n"
        "  push %rax\n"
        "  call llt_vfork_end\n"
        "  pop %rax\n"
        "  cmp $-4095, %rax\n"
        "  jae 2f\n"
        "  ret\n"
        "2: mov %rax, %rdi\n"
        "  jmp llt_vfork_fail\n"
        ".size vfork, .-vfork\n");
#elif defined(__aarch64__)
/* There is no vfork system call here: clone(CLONE_VM|CLONE_VFORK|SIGCHLD).
 * The return address lives in x30, a register. */
__asm__(".text\n"
        ".globl vfork\n"
        ".type vfork,%function\n"
        "vfork:\n"
        "  hint #34\n"                /* bti c */
        "  stp x29, x30, [sp, -16]!\n"
        "  bl llt_vfork_begin\n"
        "  ldp x29, x30, [sp], 16\n"
        "  mov x0, #0x4111\n"
        "  mov x1, #0\n"
        "  mov x2, #0\n"
        "  mov x3, #0\n"
        "  mov x4, #0\n"
        "  mov x8, #220\n"
        "  svc #0\n"
        "  cbz x0, 1f\n"              /* the child returns (see above) */
        "  stp x0, x30, [sp, -16]!\n"
        "  bl llt_vfork_end\n"
        "  ldp x0, x30, [sp], 16\n"
        "  cmn x0, #4095\n"
        "  b.hs 2f\n"
        "1: ret\n"
        "2: b llt_vfork_fail\n"
        ".size vfork, .-vfork\n");
#else
/* Elsewhere a real fork, which POSIX allows for vfork: the child then has
 * memory of its own, and the fork handlers give it its own state. */
HOOK pid_t vfork(void) { return fork(); }
#endif
