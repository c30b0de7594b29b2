package conformance

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Status is the outcome of one check.
type Status string

const (
	StatusPass Status = "pass"
	StatusFail Status = "fail"
	StatusSkip Status = "skip"
)

// Result is one check's outcome.
type Result struct {
	// Name is the check's path, e.g. "numerics/f32/llama_tied/gradients".
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Reason says why a check failed (every failed assertion, one per line)
	// or was skipped (the capability the backend does not declare).
	Reason string `json:"reason,omitempty"`
	// Details are what the check measured, e.g. the worst error against the
	// golden vectors as a fraction of the tolerance.
	Details  []string      `json:"details,omitempty"`
	Duration time.Duration `json:"-"`
	Seconds  float64       `json:"duration_s"`
}

// Summary counts results by status.
type Summary struct {
	Passed  int `json:"passed"`
	Failed  int `json:"failed"`
	Skipped int `json:"skipped"`
}

// Report is the outcome of a conformance run.
type Report struct {
	// Plugin is the path of the plugin binary under test.
	Plugin string `json:"plugin"`
	// Backend, Version and Engine come from its GetInfo (empty when the
	// handshake failed).
	Backend string `json:"backend,omitempty"`
	Version string `json:"version,omitempty"`
	Engine  string `json:"engine,omitempty"`
	// Info is the whole GetInfo response as protojson.
	Info json.RawMessage `json:"info,omitempty"`
	// DTypes are the compute dtypes the numerical checks ran in.
	DTypes []string `json:"dtypes,omitempty"`
	// Reference is the CPU reference plugin used by the portability checks.
	Reference string    `json:"reference,omitempty"`
	Started   time.Time `json:"started"`
	Seconds   float64   `json:"duration_s"`
	Summary   Summary   `json:"summary"`
	Results   []Result  `json:"results"`
}

// Failed reports whether any check failed.
func (r *Report) Failed() bool { return r.Summary.Failed > 0 }

func (r *Report) add(res Result) {
	res.Seconds = res.Duration.Seconds()
	switch res.Status {
	case StatusPass:
		r.Summary.Passed++
	case StatusFail:
		r.Summary.Failed++
	case StatusSkip:
		r.Summary.Skipped++
	}
	r.Results = append(r.Results, res)
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable prints one line per check (status, name, duration, the first
// line of the reason) and a summary. With verbose, every line of a failure's
// reason and the measured details are printed too.
func (r *Report) WriteTable(w io.Writer, verbose bool) {
	fmt.Fprintf(w, "backend %s %s (%s)\nplugin  %s\n", orDash(r.Backend), orDash(r.Version), orDash(r.Engine), r.Plugin)
	if r.Reference != "" {
		fmt.Fprintf(w, "reference %s\n", r.Reference)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCHECK\tTIME\tDETAIL")
	for _, res := range r.Results {
		detail := res.Reason
		if res.Status == StatusPass && len(res.Details) > 0 {
			detail = res.Details[0]
		}
		first, rest, _ := strings.Cut(detail, "\n")
		if rest != "" && !verbose {
			first += fmt.Sprintf(" (+%d more)", strings.Count(rest, "\n")+1)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", strings.ToUpper(string(res.Status)), res.Name, formatDuration(res.Duration), first)
		if verbose {
			for _, line := range strings.Split(rest, "\n") {
				if line != "" {
					fmt.Fprintf(tw, "\t\t\t%s\n", line)
				}
			}
			for _, d := range res.Details {
				if d != detail {
					fmt.Fprintf(tw, "\t\t\t%s\n", d)
				}
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d passed, %d failed, %d skipped in %s\n", r.Summary.Passed, r.Summary.Failed, r.Summary.Skipped,
		formatDuration(time.Duration(r.Seconds*float64(time.Second))))
}

func formatDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return "<1ms"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
