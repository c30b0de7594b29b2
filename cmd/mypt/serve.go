package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/mypt/mypt/core/server"
	"github.com/mypt/mypt/sdk/discovery"
)

func newServeCmd() *cobra.Command {
	var (
		root, addr, backend, authFile, password string
		host                                    string
		port                                    int
		secure                                  bool
	)
	cmd := &cobra.Command{
		Use:   "serve --models-root DIR [--addr 127.0.0.1:8080]",
		Short: "Serve the web chat and training pages",
		Long: `Serve a web page with a Chat tab (talk to any checkpoint or run directory under
--models-root) and a Training tab (loss, val loss and learning rate of every
run with a metrics.jsonl under the root).

It binds 127.0.0.1 by default and then needs no login. Bound to any other
address it requires one: the password comes from --password or the
MYPT_SERVE_PASSWORD environment variable, or else, on first start, a random
token is printed once. Only its bcrypt hash is kept, in --auth-file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if root == "" {
				// MyPT's webapp lists ./checkpoints.
				if st, err := os.Stat("checkpoints"); err != nil || !st.IsDir() {
					return errors.New("--models-root is required (MyPT's webapp lists ./checkpoints, which does not exist here)")
				}
				root = "checkpoints"
				slog.Info("no --models-root: serving ./checkpoints as MyPT's webapp does")
			}
			addr, err := withHostPort(addr, host, port)
			if err != nil {
				return err
			}
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return fmt.Errorf("--addr %q: %w", addr, err)
			}
			plugin, err := discovery.FromEnvironment().Resolve(backend)
			if err != nil {
				return err
			}
			opt := server.Options{ModelsRoot: root, Backend: plugin, SecureCookies: secure, Logger: slog.Default()}
			if password == "" {
				password = os.Getenv("MYPT_SERVE_PASSWORD")
			}
			if !isLoopback(host) {
				if authFile == "" {
					dir, err := os.UserConfigDir()
					if err != nil {
						return fmt.Errorf("no --auth-file and no user config directory: %w", err)
					}
					authFile = filepath.Join(dir, "mypt", "serve-auth.json")
				}
				opt.Auth, err = server.SetupAuth(authFile, password, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				slog.Info("login required", "auth_file", authFile)
			} else if password != "" {
				slog.Warn("--password ignored: a loopback address needs no login")
			}
			srv, err := server.New(opt)
			if err != nil {
				return err
			}
			defer srv.Close()
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen: %w", err)
			}
			hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
			fmt.Fprintf(cmd.OutOrStdout(), "mypt serve: http://%s/ (models root %s)\n", ln.Addr(), root)
			errc := make(chan error, 1)
			go func() { errc <- hs.Serve(ln) }()
			select {
			case err := <-errc:
				return err
			case <-cmd.Context().Done():
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return hs.Shutdown(ctx)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&root, "models-root", "", "directory with checkpoints and run directories (default: ./checkpoints if it exists, as MyPT's webapp)")
	f.StringVar(&addr, "addr", "127.0.0.1:8080", "address to listen on")
	f.StringVar(&host, "host", "", "MyPT webapp's --host: replaces the host of --addr")
	f.IntVar(&port, "port", 0, "MyPT webapp's --port: replaces the port of --addr")
	f.StringVar(&backend, "backend", "cpu", "backend plugin: a NAME or a path (one process per loaded model)")
	f.StringVar(&authFile, "auth-file", "", "where the login's bcrypt hash is kept (default: USER_CONFIG_DIR/mypt/serve-auth.json)")
	f.StringVar(&password, "password", "", "set the login password (8 to 72 bytes; replaces a stored one)")
	f.BoolVar(&secure, "secure-cookies", false, "mark cookies Secure (when served through a TLS proxy)")
	return cmd
}

// withHostPort replaces the host and/or port of addr with MyPT's --host and
// --port when they are given.
func withHostPort(addr, host string, port int) (string, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--addr %q: %w", addr, err)
	}
	if host != "" {
		h = host
	}
	if port != 0 {
		if port < 1 || port > 65535 {
			return "", fmt.Errorf("--port %d: want 1 to 65535", port)
		}
		p = strconv.Itoa(port)
	}
	return net.JoinHostPort(h, p), nil
}

// isLoopback reports whether host only accepts local connections.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
