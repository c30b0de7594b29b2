package checkpoint

import (
	"fmt"
	"slices"
	"strings"

	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// File names inside a checkpoint directory.
const (
	ModelFile         = "model.safetensors"
	OptimizerFile     = "optimizer.safetensors"
	ConfigFile        = "config.json"
	TokenizerFile     = "tokenizer.json"
	TrainingStateFile = "training_state.json"
	ManifestFile      = "manifest.json"
)

// FormatVersion is the checkpoint format this package writes and the newest
// it reads.
const FormatVersion = 1

// Tensor-name prefixes of AdamW moments in optimizer.safetensors (PyTorch's
// AdamW state keys).
const (
	expAvgPrefix   = "exp_avg."
	expAvgSqPrefix = "exp_avg_sq."
)

// Metadata keys in model.safetensors' __metadata__.
const (
	metaTieWeights = "tie_weights"
	metaFormat     = "format"
)

// TiedName is the parameter that holds both the token embedding and, with
// tie_weights, the LM head.
const TiedName = "token_embedding_table.weight"

// TensorSpec describes one tensor of a state stream.
type TensorSpec struct {
	Name  string        // MyPT state_dict name of the parameter
	Role  pb.TensorRole // PARAM, ADAM_M or ADAM_V
	Shape []int64
	DType pb.DType
}

func (s TensorSpec) String() string {
	return fmt.Sprintf("%s %s %v %s", roleName(s.Role), s.Name, s.Shape, dtypeName(s.DType))
}

// Layout is the set of tensors a checkpoint holds (or a model expects).
type Layout struct {
	Tensors []TensorSpec
	// TieWeights: lm_head.weight is token_embedding_table.weight and is not
	// stored separately.
	TieWeights bool
}

// LayoutFromModelSpec lists the model's parameters and, with moments, their
// AdamW first and second moments (same shape and dtype as each parameter).
func LayoutFromModelSpec(spec *pb.ModelSpec, moments bool) Layout {
	l := Layout{TieWeights: spec.GetTieWeights()}
	roles := []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_PARAM}
	if moments {
		roles = append(roles, pb.TensorRole_TENSOR_ROLE_ADAM_M, pb.TensorRole_TENSOR_ROLE_ADAM_V)
	}
	for _, role := range roles {
		for _, p := range spec.GetParams() {
			l.Tensors = append(l.Tensors, TensorSpec{Name: p.GetName(), Role: role, Shape: slices.Clone(p.GetShape()), DType: p.GetDtype()})
		}
	}
	return l
}

// Params returns the layout's parameters only.
func (l Layout) Params() Layout {
	out := Layout{TieWeights: l.TieWeights}
	for _, t := range l.Tensors {
		if t.Role == pb.TensorRole_TENSOR_ROLE_PARAM {
			out.Tensors = append(out.Tensors, t)
		}
	}
	return out
}

// HasMoments reports whether the layout includes optimizer moments.
func (l Layout) HasMoments() bool {
	return slices.ContainsFunc(l.Tensors, func(t TensorSpec) bool { return t.Role != pb.TensorRole_TENSOR_ROLE_PARAM })
}

// validate checks names, roles and shapes and that every moment belongs to
// a parameter of the same shape.
func (l Layout) validate() error {
	type key struct {
		name string
		role pb.TensorRole
	}
	seen := map[key]bool{}
	params := map[string][]int64{}
	for _, t := range l.Tensors {
		if t.Name == "" || t.Name == metadataKey {
			return fmt.Errorf("layout: bad tensor name %q", t.Name)
		}
		if _, err := fileFor(t.Role); err != nil {
			return fmt.Errorf("layout: tensor %s: %w", t.Name, err)
		}
		if _, err := tensorBytes(t.Name, t.Shape, t.DType); err != nil {
			return fmt.Errorf("layout: %w", err)
		}
		k := key{t.Name, t.Role}
		if seen[k] {
			return fmt.Errorf("layout: %s %s listed twice", roleName(t.Role), t.Name)
		}
		seen[k] = true
		if t.Role == pb.TensorRole_TENSOR_ROLE_PARAM {
			params[t.Name] = t.Shape
		}
	}
	if l.TieWeights && seen[key{"lm_head.weight", pb.TensorRole_TENSOR_ROLE_PARAM}] {
		return fmt.Errorf("layout: tie_weights is set, so lm_head.weight must not be listed (it is %s)", TiedName)
	}
	for _, t := range l.Tensors {
		if t.Role == pb.TensorRole_TENSOR_ROLE_PARAM {
			continue
		}
		shape, ok := params[t.Name]
		if !ok {
			return fmt.Errorf("layout: %s %s has no parameter of that name", roleName(t.Role), t.Name)
		}
		if !slices.Equal(shape, t.Shape) {
			return fmt.Errorf("layout: %s %s has shape %v, its parameter %v", roleName(t.Role), t.Name, t.Shape, shape)
		}
	}
	return nil
}

// fileFor returns the safetensors file that holds tensors of role.
func fileFor(role pb.TensorRole) (string, error) {
	switch role {
	case pb.TensorRole_TENSOR_ROLE_PARAM:
		return ModelFile, nil
	case pb.TensorRole_TENSOR_ROLE_ADAM_M, pb.TensorRole_TENSOR_ROLE_ADAM_V:
		return OptimizerFile, nil
	}
	return "", fmt.Errorf("role %s is not stored in checkpoints", roleName(role))
}

// storedName is the tensor's key inside its safetensors file.
func storedName(name string, role pb.TensorRole) string {
	switch role {
	case pb.TensorRole_TENSOR_ROLE_ADAM_M:
		return expAvgPrefix + name
	case pb.TensorRole_TENSOR_ROLE_ADAM_V:
		return expAvgSqPrefix + name
	}
	return name
}

// parseStoredMoment splits an optimizer.safetensors key into role and name.
func parseStoredMoment(key string) (string, pb.TensorRole, bool) {
	// exp_avg_sq. must be tried first: exp_avg. is not its prefix, but keep
	// the order obvious anyway.
	if name, ok := strings.CutPrefix(key, expAvgSqPrefix); ok && name != "" {
		return name, pb.TensorRole_TENSOR_ROLE_ADAM_V, true
	}
	if name, ok := strings.CutPrefix(key, expAvgPrefix); ok && name != "" {
		return name, pb.TensorRole_TENSOR_ROLE_ADAM_M, true
	}
	return "", 0, false
}

func roleName(r pb.TensorRole) string {
	switch r {
	case pb.TensorRole_TENSOR_ROLE_PARAM:
		return "parameter"
	case pb.TensorRole_TENSOR_ROLE_ADAM_M:
		return "AdamW exp_avg of"
	case pb.TensorRole_TENSOR_ROLE_ADAM_V:
		return "AdamW exp_avg_sq of"
	}
	return r.String()
}
