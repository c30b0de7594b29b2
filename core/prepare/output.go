package prepare

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mypt/mypt/core/atomicfile"
	"github.com/mypt/mypt/core/dataset"
	"github.com/mypt/mypt/core/tokenizer"
)

// fillMetadata writes dataset_metadata.json's keys in MyPT's order.
func (p *preparer) fillMetadata(m *orderedMap, trainMask, valMask float64, ts, vs packingStats) {
	o, r := p.opt, p.res
	separateVal := o.ValFile != "" || o.ValOnly
	m.set("schema", dataset.SchemaEpisodes)
	m.set("has_loss_mask", true)
	m.set("num_conversations", r.Conversations)
	m.set("num_train_conversations", r.TrainConversations)
	m.set("num_val_conversations", r.ValConversations)
	m.set("num_train_episodes", r.TrainEpisodes)
	m.set("num_val_episodes", r.ValEpisodes)
	m.set("num_train_tokens", r.TrainTokens)
	m.set("num_val_tokens", r.ValTokens)
	m.set("num_train_shards", r.TrainShards)
	m.set("num_val_shards", r.ValShards)
	m.set("train_mask_ratio", r.TrainMaskRatio)
	m.set("val_mask_ratio", r.ValMaskRatio)
	m.set("tokenization", o.Tokenization)
	m.set("vocab_size", o.VocabSize)
	m.set("tokens_per_shard", o.TokensPerShard)
	names := make([]string, 0, 19)
	for _, s := range tokenizer.Specials() {
		names = append(names, s.Name)
	}
	m.set("special_tokens_used", names)
	mode := "val_split"
	switch {
	case o.ValOnly:
		mode = "val_only"
	case o.ValFile != "":
		mode = "explicit_val_file"
	}
	m.set("prepare_mode", mode)
	m.set("val_only", o.ValOnly)
	m.set("source_train_file", absPath(o.Input))
	switch {
	case o.ValFile != "":
		m.set("source_val_file", absPath(o.ValFile))
	case o.ValOnly:
		m.set("source_val_file", absPath(o.Input))
	default:
		m.set("source_val_file", nil)
	}
	if separateVal {
		m.set("val_split", 0.0)
	} else {
		m.set("val_split", o.ValSplit)
	}
	m.set("skip_system_prompt", o.NoSystemPrompt)
	if o.SystemPrompt != "" {
		m.set("system_prompt_override", o.SystemPrompt)
	} else {
		m.set("system_prompt_override", nil)
	}
	m.set("enable_rag_tags", o.EnableRAGTags)
	// Filled in writeSidecars, which has the conversations.
	m.set("input_rag_field_stats", nil)
	m.set("val_rag_field_stats", nil)
	m.set("schema_validation_mode", o.SchemaValidationMode)
	m.set("input_schema_report", r.InputSchema)
	if r.ValSchema != nil {
		m.set("val_schema_report", r.ValSchema)
	} else {
		m.set("val_schema_report", nil)
	}
	m.set("lineage", nil)
	if o.EnablePacking {
		m.set("packing_enabled", true)
		m.set("pack_block_size", o.PackBlockSize)
		if o.PackByField != "" {
			m.set("pack_by_field", o.PackByField)
		} else {
			m.set("pack_by_field", nil)
		}
		m.set("num_train_mask_tokens", ts.packedMaskTokens)
		m.set("num_val_mask_tokens", vs.packedMaskTokens)
		m.set("original_train_episodes", ts.originalEpisodes)
		m.set("original_val_episodes", vs.originalEpisodes)
		m.set("original_train_mask_ratio", ts.originalMaskRatio)
		m.set("avg_episode_len", ts.avgEpisodeLen)
		m.set("avg_episodes_per_pack", ts.avgEpisodesPerPack)
		m.set("nonpad_ratio", ts.nonpadRatio)
		m.set("training_efficiency_gain", ts.trainingEfficiency)
		m.set("unpacked_effective_mask", ts.unpackedEffectiveMask)
		m.set("packed_effective_mask", ts.packedMaskRatio)
	} else {
		m.set("packing_enabled", false)
		m.set("num_train_mask_tokens", trainMask)
		m.set("num_val_mask_tokens", valMask)
	}
	// Ours, beyond MyPT's keys.
	m.set("prepared_by", "mypt prepare")
	m.set("shard_layout", "single shard at the split root; several shards all in shard_NNNNN")
	m.set("num_skipped_rows", len(r.Skipped))
	m.set("num_unsupervised_episodes", r.UnsupervisedCount)
}

// writeSidecars completes the metadata and writes dataset_metadata.json,
// tokenizer_state.json and dataset_lineage.json.
func (p *preparer) writeSidecars(dir string, m *orderedMap, convs, valConvs []*conversation, payloadOverlap, templateOverlap int) error {
	o := p.opt
	m.set("input_rag_field_stats", ragStats(convs))
	if o.ValFile != "" {
		m.set("val_rag_field_stats", ragStats(valConvs))
	}
	lineage, err := p.lineage()
	if err != nil {
		return err
	}
	m.set("lineage", lineage)
	if o.ValFile != "" || o.ValOnly {
		valFile := o.ValFile
		if o.ValOnly {
			valFile = o.Input
		}
		trainSum, err := fileSHA256(o.Input)
		if err != nil {
			return err
		}
		valSum, err := fileSHA256(valFile)
		if err != nil {
			return err
		}
		m.set("source_train_sha256", trainSum)
		m.set("source_val_sha256", valSum)
		m.set("payload_overlap_count", payloadOverlap)
		m.set("template_overlap_count", templateOverlap)
	}
	b, err := marshalIndent(m)
	if err != nil {
		return fmt.Errorf("encode metadata: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, dataset.MetadataFile), b, 0o644); err != nil {
		return err
	}
	st, err := tokenizer.MarshalState(p.tok.State())
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, dataset.TokenizerFile), st, 0o644); err != nil {
		return err
	}
	side := &orderedMap{}
	side.set("lineage", lineage)
	if b, err = marshalIndent(side); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "dataset_lineage.json"), b, 0o644)
}

// lineage is MyPT's merge_lineage over the input files: each input's own
// lineage sidecar (<name>.lineage.json / .meta.json / .mix_meta.json with a
// "lineage" object) when it has one, else the file itself as a leaf origin.
func (p *preparer) lineage() (*orderedMap, error) {
	o, r := p.opt, p.res
	type input struct {
		path  string
		rows  int
		ratio float64
	}
	total := max(1, r.Conversations)
	var inputs []input
	switch {
	case o.ValFile != "":
		trainRows, err := countRows(o.Input)
		if err != nil {
			return nil, err
		}
		valRows, err := countRows(o.ValFile)
		if err != nil {
			return nil, err
		}
		inputs = append(inputs,
			input{path: absPath(o.Input), rows: trainRows, ratio: float64(r.TrainConversations) / float64(total)},
			input{path: absPath(o.ValFile), rows: valRows, ratio: float64(r.ValConversations) / float64(total)})
	case o.ValOnly:
		inputs = append(inputs, input{path: absPath(o.Input), rows: r.ValConversations, ratio: 1})
	default:
		inputs = append(inputs, input{path: absPath(o.Input), rows: r.TrainConversations, ratio: float64(r.TrainConversations) / float64(total)})
	}
	direct := []any{}
	origins := []any{}
	upstream := []any{}
	flat := map[string]float64{}
	var flatOrder []string
	addFlat := func(k string, v float64) {
		if _, ok := flat[k]; !ok {
			flatOrder = append(flatOrder, k)
		}
		flat[k] += v
	}
	for _, in := range inputs {
		d := &orderedMap{}
		d.set("path", in.path)
		d.set("sampled_rows", in.rows)
		d.set("effective_ratio", in.ratio)
		direct = append(direct, d)
		up, err := inputLineage(in.path)
		if err != nil {
			return nil, err
		}
		if ro, ok := up["recursive_origins"].([]any); ok {
			origins = append(origins, ro...)
		}
		if cc, ok := up["creation_context"].(map[string]any); ok && len(cc) > 0 {
			upstream = append(upstream, cc)
		}
		if uc, ok := up["upstream_configs"].([]any); ok {
			upstream = append(upstream, uc...)
		}
		fl, _ := up["flattened_contributions"].([]any)
		if len(fl) == 0 {
			addFlat(in.path, float64(in.rows))
			continue
		}
		sum := 0.0
		for _, x := range fl {
			if xm, ok := x.(map[string]any); ok {
				v, _ := xm["effective_rows"].(float64)
				sum += v
			}
		}
		if sum <= 0 {
			sum = 1
		}
		for _, x := range fl {
			xm, ok := x.(map[string]any)
			if !ok {
				continue
			}
			origin, _ := xm["origin_path"].(string)
			v, _ := xm["effective_rows"].(float64)
			if origin != "" {
				addFlat(origin, float64(in.rows)*max(0, v/sum))
			}
		}
	}
	totalRows := 0.0
	for _, v := range flat {
		totalRows += v
	}
	slices.SortStableFunc(flatOrder, func(a, b string) int {
		return int(math.Round(flat[b])) - int(math.Round(flat[a]))
	})
	flatList := []any{}
	for _, k := range flatOrder {
		f := &orderedMap{}
		f.set("origin_path", k)
		f.set("effective_rows", int(math.Round(flat[k])))
		pct := 0.0
		if totalRows > 0 {
			pct = math.Round(flat[k]*100/totalRows*1e6) / 1e6
		}
		f.set("effective_percent", pct)
		flatList = append(flatList, f)
	}
	args := &orderedMap{}
	args.set("input", o.Input)
	if o.ValFile != "" {
		args.set("val_file", o.ValFile)
	} else {
		args.set("val_file", nil)
	}
	args.set("output_dir", o.Output)
	args.set("enable_packing", o.EnablePacking)
	args.set("pack_block_size", o.PackBlockSize)
	args.set("enable_rag_tags", o.EnableRAGTags)
	args.set("seed", o.Seed)
	cc := &orderedMap{}
	cc.set("timestamp", time.Now().UTC().Format("2006-01-02T15:04:05.000000+00:00"))
	cc.set("script", "mypt prepare")
	cc.set("args", args)

	out := &orderedMap{}
	out.set("direct_inputs", direct)
	out.set("recursive_origins", origins)
	out.set("flattened_contributions", flatList)
	out.set("creation_context", cc)
	out.set("upstream_configs", upstream)
	return out, nil
}

// inputLineage is MyPT's load_lineage_for_input for a JSONL input.
func inputLineage(path string) (map[string]any, error) {
	stem := strings.TrimSuffix(path, filepath.Ext(path))
	if strings.EqualFold(filepath.Ext(path), ".jsonl") {
		for _, side := range []string{stem + ".mix_meta.json", stem + ".meta.json", stem + ".lineage.json"} {
			b, err := os.ReadFile(side)
			if err != nil {
				continue
			}
			var meta map[string]any
			if json.Unmarshal(b, &meta) != nil {
				continue
			}
			if l, ok := meta["lineage"].(map[string]any); ok {
				return l, nil
			}
			if _, ok := meta["flattened_contributions"]; ok {
				if _, ok := meta["recursive_origins"]; ok {
					return meta, nil
				}
			}
		}
	}
	rows := 0
	if strings.EqualFold(filepath.Ext(path), ".jsonl") {
		n, err := countRows(path)
		if err != nil {
			return nil, err
		}
		rows = n
	}
	pct := 0.0
	if rows > 0 {
		pct = 100
	}
	return map[string]any{
		"recursive_origins": []any{map[string]any{
			"origin_path": path, "rows": float64(rows), "notes": "leaf_source_no_lineage_metadata"}},
		"flattened_contributions": []any{map[string]any{
			"origin_path": path, "effective_rows": float64(rows), "effective_percent": pct}},
		"creation_context": map[string]any{},
		"upstream_configs": []any{},
	}, nil
}

// countRows counts non-blank lines (MyPT's count_jsonl_rows).
func countRows(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if pyStrip(line) != "" {
			n++
		}
	}
	return n, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// checkReplaceable refuses to replace anything at dir but an empty
// directory or a dataset: prepare swaps its output in whole.
func checkReplaceable(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("prepare: output %s exists and is not a directory", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	if len(entries) == 0 {
		return nil
	}
	for _, marker := range []string{dataset.MetadataFile, dataset.TokenizerFile, "train", "val"} {
		if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
			return nil
		}
	}
	return fmt.Errorf("prepare: output %s is a non-empty directory that is not a dataset; refusing to replace it", dir)
}

// stageDir creates a hidden staging directory beside out. commit swaps it
// in (an existing dataset at out is replaced only once the new one is
// complete); cleanup removes whatever is left and is safe after commit.
func stageDir(out string) (stage string, commit func() error, cleanup func(), err error) {
	out = filepath.Clean(out)
	parent := filepath.Dir(out)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", nil, nil, fmt.Errorf("prepare: %w", err)
	}
	stage, err = os.MkdirTemp(parent, "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return "", nil, nil, fmt.Errorf("prepare: %w", err)
	}
	cleanup = func() { os.RemoveAll(stage) }
	commit = func() error {
		if err := os.Chmod(stage, 0o755); err != nil {
			return err
		}
		if err := checkReplaceable(out); err != nil {
			return err
		}
		if err := atomicfile.ReplaceDir(stage, out); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		return nil
	}
	return stage, commit, cleanup, nil
}
