package conformance

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
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
	// Reference is the CPU reference backend used by the portability checks:
	// a plugin path, or "in process".
	Reference string    `json:"reference,omitempty"`
	Started   time.Time `json:"started"`
	Seconds   float64   `json:"duration_s"`
	Summary   Summary   `json:"summary"`
	// Profiles are the verdicts on every profile, in a fixed order.
	Profiles []ProfileResult `json:"profiles"`
	// Uses say what mypt can do with the backend, from its certified
	// profiles ("train", "generate (with the KV cache)", ...); empty when core
	// is not certified.
	Uses []string `json:"uses,omitempty"`
	// Unusable says why the backend certifies no profile mypt can use (core
	// failed, or none of its checks passed); empty when it does, or when the
	// run's filter left out every core check.
	Unusable string `json:"unusable,omitempty"`
	// Notes are what the run noticed without failing the backend, such as
	// enum values newer than this suite (the protocol evolves by adding them).
	Notes   []string `json:"notes,omitempty"`
	Results []Result `json:"results"`
}

// Failed reports whether any check failed, or the backend certifies no
// profile mypt can use.
func (r *Report) Failed() bool { return r.Summary.Failed > 0 || r.Unusable != "" }

// Certified lists the profiles the backend is certified for.
func (r *Report) Certified() []Profile {
	var out []Profile
	for _, pr := range r.Profiles {
		if pr.Certified {
			out = append(out, pr.Profile)
		}
	}
	return out
}

// certify judges the profiles from the results (caps nil: nothing but core
// is declared).
func (r *Report) certify(caps *pb.Capabilities, plan []check) {
	cert := certifyProfiles(caps, plan, r.Results)
	r.Profiles, r.Uses, r.Unusable = cert.profiles, cert.uses, cert.unusable
}

func (r *Report) certification() certification {
	return certification{profiles: r.Profiles, uses: r.Uses, unusable: r.Unusable}
}

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
// line of the reason), a summary, the notes, and one line per profile (is it
// declared, is it certified, how its checks went). With verbose, every line
// of a failure's reason and the measured details are printed too.
func (r *Report) WriteTable(w io.Writer, verbose bool) {
	plugin := r.Plugin
	if plugin == "" {
		plugin = "(in process)"
	}
	fmt.Fprintf(w, "backend %s %s (%s)\nplugin  %s\n", orDash(r.Backend), orDash(r.Version), orDash(r.Engine), plugin)
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
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintln(w)
	writeProfiles(w, r.certification())
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
