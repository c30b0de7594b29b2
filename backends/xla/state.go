package xla

import (
	"fmt"

	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/mypt/mypt/sdk/paramstate"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// session is the paramstate.Store of SetState and GetState: every role keeps one engine
// tensor per parameter.
var _ paramstate.Store = (*session)(nil)

func (s *session) Has(role pb.TensorRole) bool { return s.state.Has(role) }

func (s *session) Load(role pb.TensorRole, i int, values []float32) error {
	list, _ := s.state.Of(role)
	old := list[i]
	list[i] = tensors.FromFlatDataAndDimensions(values, toInts(s.lay.Params[i].Shape)...)
	_ = old.FinalizeAll()
	return nil
}

func (s *session) Values(role pb.TensorRole, i int) ([]float32, error) {
	list, _ := s.state.Of(role)
	vals, err := hostCopy[float32](list[i])
	if err != nil {
		return nil, fmt.Errorf("reading tensor %s: %w", s.lay.Params[i].Name, err)
	}
	return vals, nil
}
