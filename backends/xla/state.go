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

func roleIndex(r pb.TensorRole) int {
	switch r {
	case pb.TensorRole_TENSOR_ROLE_PARAM:
		return roleParam
	case pb.TensorRole_TENSOR_ROLE_GRAD:
		return roleGrad
	case pb.TensorRole_TENSOR_ROLE_ADAM_M:
		return roleM
	case pb.TensorRole_TENSOR_ROLE_ADAM_V:
		return roleV
	}
	return -1
}

func (s *session) Has(role pb.TensorRole) bool { return roleIndex(role) >= 0 }

func (s *session) Load(role pb.TensorRole, i int, values []float32) error {
	ri := roleIndex(role)
	old := s.state[ri][i]
	s.state[ri][i] = tensors.FromFlatDataAndDimensions(values, toInts(s.lay.Params[i].Shape)...)
	_ = old.FinalizeAll()
	return nil
}

func (s *session) Values(role pb.TensorRole, i int) ([]float32, error) {
	vals, err := hostCopy[float32](s.state[roleIndex(role)][i])
	if err != nil {
		return nil, fmt.Errorf("reading tensor %s: %w", s.lay.Params[i].Name, err)
	}
	return vals, nil
}
