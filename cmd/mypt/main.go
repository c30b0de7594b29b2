// Command mypt is the mypt trainer's command-line interface: it prepares
// datasets, trains through a backend plugin, generates, chats and serves.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mypt:", err)
		os.Exit(1)
	}
}
