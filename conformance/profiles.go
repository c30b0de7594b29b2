package conformance

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Profile is a set of checks that together certify one thing a backend can
// do for mypt (backend.proto's header: the calls of "core" every backend
// implements; "training" and "kv-cache" behind their features). Every check
// belongs to exactly one profile, set where the check is listed.
type Profile string

const (
	// ProfileCore is GetInfo, Configure, SetState, GetState, Evaluate and
	// Shutdown, the protocol contract around them, and the golden forward
	// pass: what generating without a KV cache needs.
	ProfileCore Profile = "core"
	// ProfileTraining is ForwardBackward and OptimizerStep (FEATURE_TRAINING):
	// gradients, AdamW, accumulation and the loss trajectory.
	ProfileTraining Profile = "training"
	// ProfileKVCache is Prefill, Decode and ReleaseCache (FEATURE_KV_CACHE).
	ProfileKVCache Profile = "kv-cache"
	// ProfilePacked is segment-isolated packed batches
	// (FEATURE_PACKED_SEGMENTS): the golden packed cases and the packing
	// checks.
	ProfilePacked Profile = "packed"
	// ProfileDropout is dropout in training (FEATURE_DROPOUT, or
	// FEATURE_NEFTUNE: training-time noise that follows the request's seed).
	ProfileDropout Profile = "dropout"
	// ProfileDeterministic is bit-identical results on request
	// (FEATURE_DETERMINISTIC).
	ProfileDeterministic Profile = "deterministic"
	// ProfileFrozen is frozen parameters (FEATURE_FROZEN_PARAMS).
	ProfileFrozen Profile = "frozen"
	// ProfilePortability is resuming training from another backend's state
	// and the reverse (declared with FEATURE_TRAINING; needs the CPU
	// reference).
	ProfilePortability Profile = "portability"
	// ProfileHeadWithoutBias is an output projection without lm_head.bias
	// (FEATURE_LM_HEAD_WITHOUT_BIAS: Hugging Face's GPT-2 and LLaMA heads).
	ProfileHeadWithoutBias Profile = "head-without-bias"
	// ProfileBF16 is every check run in compute dtype BF16 (declared in
	// compute_dtypes).
	ProfileBF16 Profile = "bf16"
	// ProfileF16 is every check run in compute dtype F16.
	ProfileF16 Profile = "f16"
)

// profiles lists every profile in report order with what declares it.
var profiles = []struct {
	profile  Profile
	declared func(*pb.Capabilities) bool
}{
	{ProfileCore, func(*pb.Capabilities) bool { return true }},
	{ProfileTraining, declares(pb.Feature_FEATURE_TRAINING)},
	{ProfileKVCache, declares(pb.Feature_FEATURE_KV_CACHE)},
	{ProfilePacked, declares(pb.Feature_FEATURE_PACKED_SEGMENTS)},
	{ProfileDropout, declares(pb.Feature_FEATURE_DROPOUT, pb.Feature_FEATURE_NEFTUNE)},
	{ProfileDeterministic, declares(pb.Feature_FEATURE_DETERMINISTIC)},
	{ProfileFrozen, declares(pb.Feature_FEATURE_FROZEN_PARAMS)},
	{ProfilePortability, declares(pb.Feature_FEATURE_TRAINING)},
	{ProfileHeadWithoutBias, declares(pb.Feature_FEATURE_LM_HEAD_WITHOUT_BIAS)},
	{ProfileBF16, computes(pb.DType_DTYPE_BF16)},
	{ProfileF16, computes(pb.DType_DTYPE_F16)},
}

// declares is true when the capabilities list any of the features.
func declares(fs ...pb.Feature) func(*pb.Capabilities) bool {
	return func(cp *pb.Capabilities) bool {
		return slices.ContainsFunc(fs, func(f pb.Feature) bool { return slices.Contains(cp.GetFeatures(), f) })
	}
}

// computes is true when the capabilities list compute dtype d.
func computes(d pb.DType) func(*pb.Capabilities) bool {
	return func(cp *pb.Capabilities) bool { return slices.Contains(cp.GetComputeDtypes(), d) }
}

// inDType is the profile of a check of profile p run in compute dtype d:
// a 16-bit dtype's checks certify that dtype, whatever they exercise.
func inDType(d pb.DType, p Profile) Profile {
	switch d {
	case pb.DType_DTYPE_BF16:
		return ProfileBF16
	case pb.DType_DTYPE_F16:
		return ProfileF16
	}
	return p
}

// ProfileResult is the verdict on one profile.
type ProfileResult struct {
	Profile Profile `json:"profile"`
	// Declared says the backend's GetInfo declares the profile.
	Declared bool `json:"declared"`
	// Certified says it is declared, none of its checks failed, at least one
	// passed, and (for every profile but core) core is certified. Skipped
	// checks — a capability the profile does not need, an architecture the
	// backend does not declare — do not withhold it.
	Certified bool `json:"certified"`
	Passed    int  `json:"passed"`
	Failed    int  `json:"failed"`
	Skipped   int  `json:"skipped"`
	// Reason says why a declared profile is not certified.
	Reason string `json:"reason,omitempty"`
}

// certification is the profile verdicts of one run.
type certification struct {
	profiles []ProfileResult
	uses     []string
	unusable string // why the backend certifies nothing mypt can use; "" when it does, or core was not run
}

// certifyProfiles judges every profile from the results of the checks in
// plan (checks missing from results — filtered out, not run — count for
// nothing).
func certifyProfiles(caps *pb.Capabilities, plan []check, results []Result) certification {
	profileOf := make(map[string]Profile, len(plan))
	for _, ck := range plan {
		profileOf[ck.name] = ck.profile
	}
	tally := map[Profile]*ProfileResult{}
	failedNames := map[Profile][]string{}
	for _, r := range results {
		p, ok := profileOf[r.Name]
		if !ok {
			continue
		}
		pr := tally[p]
		if pr == nil {
			pr = &ProfileResult{}
			tally[p] = pr
		}
		switch r.Status {
		case StatusPass:
			pr.Passed++
		case StatusFail:
			pr.Failed++
			failedNames[p] = append(failedNames[p], r.Name)
		case StatusSkip:
			pr.Skipped++
		}
	}
	var cert certification
	coreOK := false
	for _, spec := range profiles {
		pr := ProfileResult{Profile: spec.profile, Declared: spec.declared(caps)}
		ran := tally[spec.profile]
		if ran != nil {
			pr.Passed, pr.Failed, pr.Skipped = ran.Passed, ran.Failed, ran.Skipped
		}
		switch {
		case !pr.Declared:
		case pr.Failed > 0:
			pr.Reason = fmt.Sprintf("%d failed: %s", pr.Failed, listSome(failedNames[spec.profile], 3))
		case pr.Passed == 0 && ran == nil:
			pr.Reason = "not checked (no check of it ran)"
		case pr.Passed == 0:
			pr.Reason = "not checked (every check of it was skipped)"
		case spec.profile != ProfileCore && !coreOK:
			pr.Reason = "core is not certified"
		default:
			pr.Certified = true
		}
		if spec.profile == ProfileCore {
			coreOK = pr.Certified
			if !coreOK && ran != nil {
				cert.unusable = "core: " + pr.Reason
			}
		}
		cert.profiles = append(cert.profiles, pr)
	}
	cert.uses = usesOf(cert.profiles)
	return cert
}

// usesOf says what mypt can do with a backend certified for these profiles:
// train with core and training, generate with core alone, and faster with
// core and kv-cache ("train", "generate (with the KV cache)").
func usesOf(prs []ProfileResult) []string {
	ok := map[Profile]bool{}
	for _, pr := range prs {
		ok[pr.Profile] = pr.Certified
	}
	if !ok[ProfileCore] {
		return nil
	}
	var uses []string
	if ok[ProfileTraining] {
		uses = append(uses, "train")
	}
	if ok[ProfileKVCache] {
		return append(uses, "generate (with the KV cache)")
	}
	return append(uses, "generate (without a KV cache: every token re-runs the sequence)")
}

// writeProfiles prints one line per profile and what mypt can do.
func writeProfiles(w io.Writer, cert certification) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROFILE\tDECLARED\tCERTIFIED\tCHECKS\tNOTE")
	for _, pr := range cert.profiles {
		declared, certified := "no", "-"
		if pr.Declared {
			declared, certified = "yes", "no"
			if pr.Certified {
				certified = "yes"
			}
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s", pr.Profile, declared, certified, countLine(pr))
		if pr.Reason != "" {
			line += "\t" + firstLineOf(pr.Reason) // no trailing cell, no trailing blanks
		}
		fmt.Fprintln(tw, line)
	}
	tw.Flush()
	switch {
	case cert.unusable != "":
		fmt.Fprintf(w, "\nnot usable by mypt: %s\n", cert.unusable)
	case len(cert.uses) > 0:
		fmt.Fprintf(w, "\nmypt can use this backend to: %s\n", strings.Join(cert.uses, ", "))
	}
}

// listSome joins the first n names, saying how many more there are.
func listSome(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s (+%d more)", strings.Join(names[:n], ", "), len(names)-n)
}

// countLine is "3 passed, 1 skipped" (zero counts left out), or "-".
func countLine(pr ProfileResult) string {
	var parts []string
	for _, c := range []struct {
		n    int
		what string
	}{{pr.Passed, "passed"}, {pr.Failed, "failed"}, {pr.Skipped, "skipped"}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}
