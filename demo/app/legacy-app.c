/* A "legacy" program of the kind logtap is for: it prints progress on
 * stdout, warnings on stderr, and writes its real log into a file inside
 * its own filesystem with stdio, opening it once per message. Nobody may
 * change it; logtap taps all three. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(void)
{
    const char *log = getenv("APP_LOG") ? getenv("APP_LOG") : "/var/log/legacy/app.log";
    int lines = getenv("APP_LINES") ? atoi(getenv("APP_LINES")) : 10;
    int pause_ms = getenv("APP_PAUSE_MS") ? atoi(getenv("APP_PAUSE_MS")) : 300;
    printf("legacy-app starting, logging to %s\n", log);
    fflush(stdout);
    for (int i = 1; i <= lines; i++) {
        printf("tick %d\n", i);
        fflush(stdout);
        FILE *f = fopen(log, "a");
        if (!f) {
            perror(log);
            return 1;
        }
        fprintf(f, "[info] request %d served in %d ms\n", i, 10 + (i * 7) % 40);
        if (i % 4 == 0)
            fprintf(f, "{\"event\":\"checkpoint\",\"n\":%d}\n", i);
        fclose(f);
        if (i % 5 == 0)
            fprintf(stderr, "warning: queue depth %d\n", i * 3);
        usleep((useconds_t)pause_ms * 1000);
    }
    printf("legacy-app done\n");
    return 0;
}
