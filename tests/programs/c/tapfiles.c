/* Log files opened every way a server might, under LLT_TAP_FILE patterns
 * (tests/tapfiles.rs). Usage: tapfiles ways|bound DIR (cwd is DIR). */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void put(int fd, const char *s)
{
    size_t n = strlen(s);
    if (write(fd, s, n) != (ssize_t)n) {
        perror("write");
        exit(1);
    }
}

static int must(int fd, const char *what)
{
    if (fd < 0) {
        perror(what);
        exit(1);
    }
    return fd;
}

static void ways(void)
{
    mkdir("logs", 0755);
    mkdir("logs/a", 0755);
    mkdir("logs/a/b", 0755);
    mkdir("other", 0755);

    /* A relative name from the current directory. */
    int one = must(open("logs/one.log", O_WRONLY | O_CREAT | O_APPEND, 0644), "one");
    put(one, "one: relative open\n");

    /* openat with a directory fd. */
    int dir = must(open("logs", O_RDONLY | O_DIRECTORY), "logs");
    int two = must(openat(dir, "two.log", O_WRONLY | O_CREAT | O_TRUNC, 0644), "two");
    put(two, "two: openat with a dirfd\n");

    /* Two levels down, through stdio, by an absolute name. */
    char cwd[4096], deep[4200];
    if (!getcwd(cwd, sizeof cwd))
        exit(1);
    snprintf(deep, sizeof deep, "%s/logs/a/b/deep.log", cwd);
    FILE *f = fopen(deep, "a");
    if (!f)
        exit(1);
    fprintf(f, "deep: fopen two directories down, %d\n", 42);
    fflush(f);

    /* creat, and a name with dots and dashes made at run time. */
    int three = must(creat("logs/app-2026-11-30_061500.log", 0644), "creat");
    put(three, "dated: created with creat\n");

    /* A symlink (ours) whose name matches; its target's does not. */
    int t = must(open("other/target.txt", O_WRONLY | O_CREAT, 0644), "target");
    close(t);
    if (symlink("../other/target.txt", "logs/link.log") != 0)
        exit(1);
    int link = must(open("logs/link.log", O_WRONLY | O_APPEND), "link");
    put(link, "link: through a symlink of ours\n");

    /* Not matching: another extension, another directory. */
    int bin = must(open("logs/data.bin", O_WRONLY | O_CREAT, 0644), "bin");
    put(bin, "not a log\n");
    int other = must(open("other/x.log", O_WRONLY | O_CREAT, 0644), "other");
    put(other, "not under logs\n");

    /* Rotation by rename: the fd keeps writing into the renamed file, the
     * reopened name is the same source. */
    int rot = must(open("logs/rot.log", O_WRONLY | O_CREAT | O_APPEND, 0644), "rot");
    put(rot, "rot 1 before the rename\n");
    if (rename("logs/rot.log", "logs/rot.log.1") != 0)
        exit(1);
    put(rot, "rot 2 after the rename, old fd\n");
    int rot2 = must(open("logs/rot.log", O_WRONLY | O_CREAT | O_APPEND, 0644), "rot2");
    put(rot2, "rot 3 reopened\n");
    close(rot);

    /* dup2 onto stderr (nginx's error log): fd 2 writes are that file's. */
    dup2(one, 2);
    dprintf(2, "one: via fd 2 after dup2\n");
    put(two, "two: again\n");
    put(one, "one: again\n");
    fclose(f);
    close(two);
    close(three);
    close(link);
    close(bin);
    close(other);
    close(rot2);
    close(dir);
}

/* More files than the library's table of file sources holds. */
static void bound(void)
{
    mkdir("logs", 0755);
    for (int i = 0; i < 70; i++) {
        char name[64], line[64];
        snprintf(name, sizeof name, "logs/f%02d.log", i);
        snprintf(line, sizeof line, "file %02d\n", i);
        int fd = must(open(name, O_WRONLY | O_CREAT | O_APPEND, 0644), name);
        put(fd, line);
        close(fd);
    }
}

/* Rotation racing the open: one thread opens logs/app.log, writes a line
 * and closes it, again and again (as redis does for every message), while
 * another renames logs/app.log to logs/app.log.1 as fast as it can. Some
 * opens land just before a rename, so the name no longer leads to the file
 * by the time the library looks at it. */
static atomic_int racing = 1;

static void *renamer(void *arg)
{
    (void)arg;
    while (atomic_load(&racing))
        rename("logs/app.log", "logs/app.log.1");
    return NULL;
}

static void race(void)
{
    mkdir("logs", 0755);
    pthread_t t;
    if (pthread_create(&t, NULL, renamer, NULL))
        exit(3);
    for (int i = 0; i < 20000; i++) {
        char line[64];
        snprintf(line, sizeof line, "line %05d\n", i);
        int fd = must(open("logs/app.log", O_WRONLY | O_CREAT | O_APPEND, 0644), "logs/app.log");
        put(fd, line);
        close(fd);
    }
    atomic_store(&racing, 0);
    pthread_join(t, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    if (!strcmp(argv[1], "ways"))
        ways();
    else if (!strcmp(argv[1], "bound"))
        bound();
    else if (!strcmp(argv[1], "race"))
        race();
    else
        return 2;
    return 0;
}
