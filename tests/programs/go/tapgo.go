// A Go program for tests/run.rs, built with CGO_ENABLED=0: statically
// linked, so LD_PRELOAD cannot reach it and logtap-run relays it.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	switch os.Args[1] {
	case "lines":
		// lines N CODE: N lines on stdout, every tenth also on stderr,
		// one write each, then exit with CODE.
		n, _ := strconv.Atoi(os.Args[2])
		code, _ := strconv.Atoi(os.Args[3])
		for i := 0; i < n; i++ {
			fmt.Fprintf(os.Stdout, "out %d %s\n", i, strings.Repeat("x", i%300))
			if i%10 == 0 {
				fmt.Fprintf(os.Stderr, "err %d\n", i)
			}
		}
		os.Exit(code)
	case "split":
		// One line in two writes with a pause: one record, not two.
		os.Stdout.WriteString("first half, ")
		time.Sleep(10 * time.Millisecond)
		os.Stdout.WriteString("second half\n")
	case "term":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Println("ready")
		s := <-c
		fmt.Printf("handler got %v\n", s)
		os.Exit(42)
	case "flood":
		// flood MB: MB MiB in 64 KiB writes, as fast as the output takes them.
		mb, _ := strconv.Atoi(os.Args[2])
		buf := []byte(strings.Repeat(strings.Repeat("y", 63)+"\n", 1024))
		for i := 0; i < mb*16; i++ {
			os.Stdout.Write(buf)
		}
	}
}
