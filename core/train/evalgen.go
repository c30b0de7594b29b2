package train

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/mypt/mypt/core/generate"
	"github.com/mypt/mypt/core/tokenizer"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// DefaultEvalMaxNewTokens is MyPT's --eval_max_new_tokens default.
const DefaultEvalMaxNewTokens = 64

// evalPrompt is one prompt of MyPT's --eval_prompts_file, encoded.
type evalPrompt struct {
	name   string
	ids    []int32
	maxNew int // eval_max_new_tokens, capped to what the context leaves
}

// evalGen is the generation MyPT runs at every eval with
// --eval_prompts_file: each prompt greedily, once through the backend's KV
// cache (Prefill/Decode, logged as "gen") and once by re-running the whole
// sequence (Evaluate, logged as "gen_nocache").
type evalGen struct {
	file    string
	prompts []evalPrompt // in name order
	tok     *tokenizer.Tokenizer
	kvCache bool // the backend declares FEATURE_KV_CACHE
}

// genResult is one eval's generations, name → completion.
type genResult struct {
	step              int
	cached, nocache   map[string]string
	mismatch, ordered []string
}

// loadEvalPrompts reads and checks r.EvalPromptsFile (nil when unset):
// MyPT's JSON {"prompts": {name: prompt}}, each prompt raw text (tags
// included, as mypt generate --prompt takes it), encoded with the run's
// tokenizer. Errors name the file. info is the backend's GetInfo (whether it has a
// KV cache).
func (r *Run) loadEvalPrompts(info *pb.GetInfoResponse, log *slog.Logger) (*evalGen, error) {
	file := r.EvalPromptsFile
	if file == "" {
		return nil, nil
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("eval prompts file %s: %s", file, fmt.Sprintf(format, args...))
	}
	maxNew := r.EvalMaxNewTokens
	if maxNew == 0 {
		maxNew = DefaultEvalMaxNewTokens
	}
	if maxNew < 1 {
		return nil, fmt.Errorf("eval_max_new_tokens must be at least 1, got %d", maxNew)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("eval prompts file: %w", err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fail("not a JSON object (want {\"prompts\": {\"name\": \"prompt text\", ...}}): %v", err)
	}
	raw, ok := doc["prompts"]
	if !ok {
		return nil, fail(`no "prompts" key (want {"prompts": {"name": "prompt text", ...}})`)
	}
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(raw, &entries); err != nil || entries == nil {
		return nil, fail(`"prompts" must be an object of name → prompt text, got %s`, jsonKind(raw))
	}
	if len(entries) == 0 {
		return nil, fail(`"prompts" is empty`)
	}
	tok, err := tokenizer.Parse(r.TokenizerState, r.Config.VocabSize)
	if err != nil {
		return nil, fmt.Errorf("eval prompts file %s: the run's tokenizer: %w", file, err)
	}
	g := &evalGen{file: file, tok: tok}
	block := r.Config.BlockSize
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		var text string
		if err := json.Unmarshal(entries[name], &text); err != nil {
			return nil, fail("prompt %q is %s, want a string (the raw prompt text, tags included, as MyPT takes it)", name, jsonKind(entries[name]))
		}
		if text == "" {
			return nil, fail("prompt %q is empty", name)
		}
		ids, err := tok.Encode(text)
		if err != nil {
			return nil, fail("prompt %q: encode: %v", name, err)
		}
		for _, id := range ids {
			if int(id) >= r.Config.VocabSize {
				return nil, fail("prompt %q: token id %d is outside the model's vocab_size %d", name, id, r.Config.VocabSize)
			}
		}
		if len(ids) >= block {
			return nil, fail("prompt %q is %d tokens, leaving no room to generate in the model's context of %d tokens; shorten it", name, len(ids), block)
		}
		p := evalPrompt{name: name, ids: generate.Int32IDs(ids), maxNew: min(maxNew, block-len(ids))}
		if p.maxNew < maxNew {
			log.Warn("eval prompt: fewer new tokens than eval_max_new_tokens fit in the context", "prompt", name,
				"prompt_tokens", len(ids), "block_size", block, "max_new_tokens", p.maxNew)
		}
		g.prompts = append(g.prompts, p)
	}
	g.kvCache = slices.Contains(info.GetCapabilities().GetFeatures(), pb.Feature_FEATURE_KV_CACHE)
	if !g.kvCache {
		log.Warn("backend does not declare FEATURE_KV_CACHE: eval prompts are generated without the KV cache only (gen_nocache); no gen, no cache check",
			"backend", info.GetName(), "file", file)
	}
	log.Info("eval prompts", "file", file, "prompts", len(g.prompts), "max_new_tokens", maxNew, "kv_cache_check", g.kvCache)
	return g, nil
}

func jsonKind(raw json.RawMessage) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return "invalid JSON"
	}
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "a JSON array"
	default:
		return "a JSON object"
	}
}

// run generates every prompt greedily with the backend's current weights,
// with the KV cache (when the backend has one) and by full re-forward. It
// touches no training state: Prefill/Decode/Evaluate only, and the caches
// are released (generate.Generate releases its cache).
func (g *evalGen) run(ctx context.Context, r *Run, step int) (*genResult, error) {
	res := &genResult{step: step, nocache: map[string]string{}}
	if g.kvCache {
		res.cached = map[string]string{}
	}
	stop := generate.StopIDs()
	for _, p := range g.prompts {
		res.ordered = append(res.ordered, p.name)
		full, err := generate.GreedyFullForward(ctx, r.Backend, p.ids, p.maxNew, r.Config.BlockSize, r.Config.VocabSize, stop)
		if err != nil {
			return nil, fmt.Errorf("eval prompt %q (%s): generate without the KV cache: %w", p.name, g.file, err)
		}
		res.nocache[p.name] = g.decode(full)
		if !g.kvCache {
			continue
		}
		cached, err := generate.Generate(ctx, r.Backend, generate.Request{
			Prompt: p.ids, MaxNewTokens: p.maxNew, BlockSize: r.Config.BlockSize, VocabSize: r.Config.VocabSize, Stop: stop,
			Sampler: generate.NewSampler(generate.Params{Temperature: 0}, 0),
		})
		if err != nil {
			return nil, fmt.Errorf("eval prompt %q (%s): generate with the KV cache: %w", p.name, g.file, err)
		}
		res.cached[p.name] = g.decode(cached)
		if !slices.Equal(cached, full) {
			res.mismatch = append(res.mismatch, p.name)
		}
	}
	return res, nil
}

// decode renders generated ids; an id the tokenizer cannot decode (a char
// model's id past its characters) is shown as <unk_tok_ID>.
func (g *evalGen) decode(ids []int32) string {
	u := make([]uint32, len(ids))
	for i, id := range ids {
		u[i] = uint32(id)
	}
	if s, err := g.tok.Decode(u); err == nil {
		return s
	}
	var sb strings.Builder
	for _, id := range u {
		sb.WriteString(g.tok.TokenText(id))
	}
	return sb.String()
}

// addTo puts the generations into the eval event: MyPT's gen (KV cache)
// and gen_nocache, each name → completion.
func (res *genResult) addTo(event map[string]any) {
	if res.cached != nil {
		event["gen"] = res.cached
	}
	event["gen_nocache"] = res.nocache
}

// log writes a line per prompt (its name and the start of the completion)
// and MyPT's CACHE MISMATCH warning when the two generations differ.
func (res *genResult) log(log *slog.Logger) {
	for _, name := range res.ordered {
		text, ok := res.cached[name]
		if !ok {
			text = res.nocache[name]
		}
		log.Info("gen", "step", res.step, "prompt", name, "text", preview(text, 80))
	}
	if len(res.mismatch) > 0 {
		quoted := make([]string, len(res.mismatch))
		for i, n := range res.mismatch {
			quoted[i] = "'" + n + "'"
		}
		log.Warn(fmt.Sprintf("CACHE MISMATCH on: [%s]", strings.Join(quoted, ", ")), "step", res.step,
			"why", "greedy generation through the KV cache differs from the full re-forward: a backend bug (or near-tied logits)")
	}
}

// preview is the first n characters of s, with "…" when cut.
func preview(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
