// go-app: the demo's second "legacy" program, a Go program built with
// CGO_ENABLED=0 and so statically linked: LD_PRELOAD cannot reach it, and
// it is run through logtap-run instead (docker-compose.yaml,
// deployment.yaml). It prints progress on stdout and warnings on stderr,
// and stops cleanly on SIGTERM. Nobody may change it.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func env(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func main() {
	lines := env("APP_LINES", 10)
	pause := time.Duration(env("APP_PAUSE_MS", 300)) * time.Millisecond
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	fmt.Println("go-app starting")
	for i := 1; i <= lines; i++ {
		fmt.Printf("tick %d\n", i)
		if i%5 == 0 {
			fmt.Fprintf(os.Stderr, "warning: queue depth %d\n", i*3)
		}
		select {
		case <-term:
			fmt.Println("go-app stopping on SIGTERM")
			return
		case <-time.After(pause):
		}
	}
	fmt.Println("go-app done")
}
