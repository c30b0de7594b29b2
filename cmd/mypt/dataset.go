package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/mypt/mypt/core/dataset"
)

func newDatasetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dataset",
		Short: "Inspect, validate and view episode-indexed datasets",
	}
	cmd.AddCommand(newDatasetInspectCmd(), newDatasetValidateCmd(), newDatasetViewCmd())
	return cmd
}

func splitsOf(ds *dataset.Dataset, which string) ([]*dataset.Split, error) {
	switch which {
	case "train":
		return []*dataset.Split{ds.Train}, nil
	case "val":
		return []*dataset.Split{ds.Val}, nil
	case "all", "":
		return []*dataset.Split{ds.Train, ds.Val}, nil
	}
	return nil, fmt.Errorf("--split %q: want train, val or all", which)
}

func newDatasetInspectCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect DIR",
		Short: "Show counts, mask ratio and the episode length histogram of each split",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ds, err := dataset.Open(args[0])
			if err != nil {
				return err
			}
			defer ds.Close()
			stats := []dataset.SplitStats{ds.Train.Stats(), ds.Val.Stats()}
			out := cmd.OutOrStdout()
			if asJSON {
				return printDatasetJSON(out, map[string]any{"dir": ds.Dir, "kind": ds.Kind, "splits": stats})
			}
			schema, _ := ds.Metadata["schema"].(string)
			if schema == "" {
				schema = "(no " + dataset.MetadataFile + ")"
			}
			fmt.Fprintf(out, "%s: %s dataset, schema %s\n", ds.Dir, ds.Kind, schema)
			if tok, err := ds.Tokenizer(); err == nil {
				fmt.Fprintf(out, "tokenizer: %s, vocab %d\n", tok.Kind(), tok.VocabSize())
			}
			for _, st := range stats {
				dataset.WriteStats(out, st)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

var errInvalidDataset = errors.New("dataset is invalid")

func newDatasetValidateCmd() *cobra.Command {
	var split string
	var maxEpisodes, maxShown int
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "validate DIR",
		Short: "Check loss masks with MyPT's validator rules (packed data understood); exit status 1 if invalid",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ds, err := dataset.Open(args[0])
			if err != nil {
				return err
			}
			defer ds.Close()
			splits, err := splitsOf(ds, split)
			if err != nil {
				return err
			}
			vocab := 0
			if tok, err := ds.Tokenizer(); err == nil {
				vocab = tok.VocabSize()
			}
			out := cmd.OutOrStdout()
			if ds.Kind == dataset.KindStream {
				fmt.Fprintln(out, "token-stream dataset: no episodes or loss masks to validate")
				return nil
			}
			ok := true
			var reports []*dataset.ValidationReport
			for _, sp := range splits {
				if sp.Empty() {
					continue
				}
				r := sp.Validate(dataset.ValidateOptions{MaxEpisodes: maxEpisodes, VocabSize: vocab})
				reports = append(reports, r)
				ok = ok && r.OK()
				if asJSON {
					continue
				}
				fmt.Fprintf(out, "[%s] checked %d of %d episodes: %d valid, %d invalid\n", r.Split, r.Checked, r.Episodes, r.Valid, r.Invalid)
				for kind, n := range r.Counts {
					fmt.Fprintf(out, "  %s: %d\n", kind, n)
				}
				for i, is := range r.Issues {
					if i == maxShown {
						fmt.Fprintf(out, "  ... %d more issues (raise --show)\n", len(r.Issues)-maxShown)
						break
					}
					seg := ""
					if is.Segment > 0 {
						seg = fmt.Sprintf(" segment %d", is.Segment)
					}
					fmt.Fprintf(out, "  episode %d%s: %s %s: %s\n", is.Episode, seg, is.Severity, is.Kind, is.Message)
				}
			}
			if asJSON {
				if err := printDatasetJSON(out, reports); err != nil {
					return err
				}
			}
			if !ok {
				return errInvalidDataset
			}
			if !asJSON {
				fmt.Fprintln(out, "all episodes valid")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&split, "split", "all", "train, val or all")
	f.IntVar(&maxEpisodes, "max_episodes", 0, "check at most this many episodes per split (0 = all)")
	f.IntVar(&maxShown, "show", 20, "issues to list per split")
	f.BoolVar(&asJSON, "json", false, "print the reports as JSON")
	return cmd
}

func newDatasetViewCmd() *cobra.Command {
	var split string
	var episode int
	var table bool
	var color string
	cmd := &cobra.Command{
		Use:   "view DIR",
		Short: "Print one episode with its supervised (loss-masked) tokens marked",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ds, err := dataset.Open(args[0])
			if err != nil {
				return err
			}
			defer ds.Close()
			splits, err := splitsOf(ds, split)
			if err != nil || len(splits) != 1 {
				return fmt.Errorf("--split must be train or val")
			}
			sp := splits[0]
			if episode < 0 || episode >= sp.NumEpisodes() {
				return fmt.Errorf("episode %d out of range: %s has %d episodes", episode, sp.Name, sp.NumEpisodes())
			}
			tok, err := ds.Tokenizer()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			useColor := color == "always" || (color == "auto" && isColorTerminal(out))
			v := sp.Episode(episode)
			fmt.Fprintf(out, "%s episode %d of %d: %d tokens", sp.Name, episode, sp.NumEpisodes(), len(v.Tokens))
			if !table {
				if useColor {
					fmt.Fprint(out, " (supervised text in green)")
				} else {
					fmt.Fprint(out, " (supervised text inside ⟦ ⟧)")
				}
			}
			fmt.Fprintln(out)
			dataset.RenderEpisode(out, tok, v, dataset.ViewOptions{Table: table, Color: useColor})
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&split, "split", "train", "train or val")
	f.IntVar(&episode, "episode", 0, "episode index in the split")
	f.BoolVar(&table, "table", false, "one line per token with id, weight and segment")
	f.StringVar(&color, "color", "auto", "auto, always or never")
	return cmd
}

func printDatasetJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func isColorTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb" && filepath.Base(os.Getenv("TERM")) != ""
}
