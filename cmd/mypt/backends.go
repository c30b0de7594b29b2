package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/discovery"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// backendReport is one row of `mypt backends`.
type backendReport struct {
	Name     string              `json:"name"`
	Path     string              `json:"path"`
	Shadowed bool                `json:"shadowed,omitempty"`
	Info     *pb.GetInfoResponse `json:"-"`
	InfoJSON json.RawMessage     `json:"info,omitempty"`
	Error    string              `json:"error,omitempty"`
}

func newBackendsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "backends",
		Short: "List the backend plugins mypt can find, with each one's GetInfo",
		Long: `List backend plugins: executables named mypt-backend-NAME next to the mypt
binary, then in each directory of ` + discovery.PathEnv + `. Each is started and asked
for its GetInfo; a plugin that fails to start is listed with the reason.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			finder := discovery.FromEnvironment()
			plugins, err := finder.List()
			if err != nil {
				return err
			}
			reports := make([]backendReport, 0, len(plugins))
			for _, p := range plugins {
				r := backendReport{Name: p.Name, Path: p.Path, Shadowed: p.Shadowed}
				r.Info, err = probeBackend(cmd.Context(), p.Path)
				if err != nil {
					r.Error = err.Error()
				} else if r.InfoJSON, err = protojson.Marshal(r.Info); err != nil {
					return fmt.Errorf("encode GetInfo of %s: %w", p.Path, err)
				}
				reports = append(reports, r)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(reports)
			}
			printBackends(cmd.OutOrStdout(), finder, reports)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the reports as JSON")
	return cmd
}

// probeBackend starts a plugin, asks for its GetInfo and stops it.
func probeBackend(ctx context.Context, path string) (*pb.GetInfoResponse, error) {
	c, err := sdk.Start(ctx, path, sdk.StartOptions{
		Logger:       slog.Default(),
		StartTimeout: 20 * time.Second,
		CallTimeout:  20 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.GetInfo(ctx, nil)
}

func printBackends(w io.Writer, finder discovery.Finder, reports []backendReport) {
	if len(reports) == 0 {
		fmt.Fprintf(w, "no backend plugins found (searched %s)\n", strings.Join(finder.Dirs, ", "))
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tENGINE\tDEVICES\tFEATURES\tPATH")
	for _, r := range reports {
		path := r.Path
		if r.Shadowed {
			path += " (shadowed)"
		}
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\tERROR: %s\t%s\n", r.Name, firstLine(r.Error), path)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Info.GetVersion(), r.Info.GetEngine(),
			describeDevices(r.Info.GetDevices()), describeFeatures(r.Info.GetCapabilities().GetFeatures()), path)
	}
	tw.Flush()
}

func describeDevices(ds []*pb.Device) string {
	var parts []string
	for _, d := range ds {
		s := d.GetKind()
		if d.GetName() != "" {
			s += ":" + d.GetName()
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ",")
}

func describeFeatures(fs []pb.Feature) string {
	var parts []string
	for _, f := range fs {
		parts = append(parts, strings.ToLower(strings.TrimPrefix(f.String(), "FEATURE_")))
	}
	return strings.Join(parts, ",")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
