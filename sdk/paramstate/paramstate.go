// Package paramstate serves the SetState and GetState calls of a backend whose
// parameters follow a modelspec.Layout. It does the bookkeeping every such backend
// shares: checking each incoming tensor (a known name, a writable role, the layout's
// shape, a supported dtype of the right size), converting between the stream dtypes
// (F32, F64, BF16) and float32, choosing the roles and names a GetState asks for, and
// writing the header and tensors in the host's parameter order. The backend says only
// where a role's values live (Store).
package paramstate

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/mypt/mypt/sdk"
	"github.com/mypt/mypt/sdk/modelspec"
	pb "github.com/mypt/mypt/sdk/proto/backendv1"
)

// Store is where a backend keeps the float32 values of one model's tensors. Parameters
// are named by their index in modelspec.Layout.Params. Errors from Load and Values
// reach the caller of Receive or Send unchanged.
type Store interface {
	// Has reports whether the backend keeps tensors of role.
	Has(role pb.TensorRole) bool
	// Load replaces parameter i's values for role (len(values) is the parameter's
	// Size; the store may keep the slice).
	Load(role pb.TensorRole, i int, values []float32) error
	// Values returns parameter i's values for role (Size elements; Send only reads them).
	Values(role pb.TensorRole, i int) ([]float32, error)
}

// Receive reads the tensors of a SetState stream into st and returns how many it
// loaded. Gradients are read-only. It leaves the header (optimizer steps) and
// clearing the accumulated gradients to the caller.
func Receive(r sdk.StateReader, lay *modelspec.Layout, st Store) (uint32, error) {
	var count uint32
	for i := 0; ; i++ {
		t, err := r.Next()
		if err == io.EOF {
			return count, nil
		}
		if err != nil {
			return count, fmt.Errorf("reading state tensor %d: %w", i, err)
		}
		field := fmt.Sprintf("tensor[%s]", t.Name)
		idx, ok := lay.Index(t.Name)
		if !ok {
			return count, sdk.NotFound("tensor %q is not a parameter of this model", t.Name)
		}
		p := lay.Params[idx]
		if t.Role == pb.TensorRole_TENSOR_ROLE_GRAD {
			return count, sdk.InvalidArgument(field+".role", "gradients are read-only")
		}
		if !st.Has(t.Role) {
			return count, sdk.InvalidArgument(field+".role", "unsupported role %v", t.Role)
		}
		if !slices.Equal(t.Shape, p.Shape) {
			return count, sdk.InvalidArgument(field+".shape", "got %v, the model has %v", t.Shape, p.Shape)
		}
		vals, err := decode(t.Data, p.Size, t.DType)
		if err != nil {
			return count, sdk.InvalidArgument(field, "%v", err)
		}
		if err := st.Load(t.Role, idx, vals); err != nil {
			return count, err
		}
		count++
	}
}

// Send answers a GetState request from st: the requested roles (parameters and both
// Adam moments when it names none, the moments only if st keeps them) and names (all parameters when it names none), in
// the requested dtype (F32 when unspecified), under a header recording optimizerSteps.
func Send(req *pb.GetStateRequest, w sdk.StateWriter, lay *modelspec.Layout, optimizerSteps uint64, st Store) error {
	roles := req.GetRoles()
	if len(roles) == 0 { // the parameters, and the moments of a backend that keeps them
		for _, r := range []pb.TensorRole{pb.TensorRole_TENSOR_ROLE_PARAM, pb.TensorRole_TENSOR_ROLE_ADAM_M, pb.TensorRole_TENSOR_ROLE_ADAM_V} {
			if st.Has(r) {
				roles = append(roles, r)
			}
		}
	}
	for i, r := range roles {
		if !st.Has(r) {
			return sdk.InvalidArgument(fmt.Sprintf("roles[%d]", i), "unsupported role %v", r)
		}
	}
	dtype := req.GetDtype()
	if dtype == pb.DType_DTYPE_UNSPECIFIED {
		dtype = pb.DType_DTYPE_F32
	}
	if elemSize(dtype) == 0 {
		return sdk.InvalidArgument("dtype", "unsupported %v", dtype)
	}
	idxs := make([]int, len(lay.Params))
	for i := range idxs {
		idxs[i] = i
	}
	if names := req.GetNames(); len(names) > 0 {
		idxs = idxs[:0]
		for i, n := range names {
			idx, ok := lay.Index(n)
			if !ok {
				return sdk.NotFound("names[%d]: tensor %q is not a parameter of this model", i, n)
			}
			idxs = append(idxs, idx)
		}
	}
	if err := w.WriteHeader(&pb.StateHeader{OptimizerSteps: optimizerSteps, TensorCount: uint32(len(idxs) * len(roles))}); err != nil {
		return fmt.Errorf("writing state header: %w", err)
	}
	for _, r := range roles {
		for _, idx := range idxs {
			p := lay.Params[idx]
			vals, err := st.Values(r, idx)
			if err != nil {
				return err
			}
			t := &sdk.Tensor{Name: p.Name, Role: r, Shape: slices.Clone(p.Shape), DType: dtype, Data: encode(vals, dtype)}
			if err := w.WriteTensor(t); err != nil {
				return fmt.Errorf("writing tensor %s: %w", p.Name, err)
			}
		}
	}
	return nil
}

// elemSize is the byte size of a state-stream dtype, 0 if unsupported.
func elemSize(d pb.DType) int {
	switch d {
	case pb.DType_DTYPE_F32:
		return 4
	case pb.DType_DTYPE_F64:
		return 8
	case pb.DType_DTYPE_BF16:
		return 2
	}
	return 0
}

// decode converts n little-endian elements of dtype d to float32.
func decode(data []byte, n int, d pb.DType) ([]float32, error) {
	es := elemSize(d)
	if es == 0 {
		return nil, fmt.Errorf("unsupported dtype %v", d)
	}
	if len(data) != es*n {
		return nil, fmt.Errorf("got %d bytes, want %d (%d elements of %v)", len(data), es*n, n, d)
	}
	dst := make([]float32, n)
	for i := range dst {
		switch d {
		case pb.DType_DTYPE_F32:
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		case pb.DType_DTYPE_F64:
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:])))
		case pb.DType_DTYPE_BF16:
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(data[2*i:])) << 16)
		}
	}
	return dst, nil
}

// encode converts src to little-endian elements of dtype d (bf16 rounds to nearest
// even; NaN stays NaN).
func encode(src []float32, d pb.DType) []byte {
	out := make([]byte, elemSize(d)*len(src))
	for i, v := range src {
		switch d {
		case pb.DType_DTYPE_F32:
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		case pb.DType_DTYPE_F64:
			binary.LittleEndian.PutUint64(out[8*i:], math.Float64bits(float64(v)))
		case pb.DType_DTYPE_BF16:
			binary.LittleEndian.PutUint16(out[2*i:], sdk.F32ToBF16(v))
		}
	}
	return out
}

// Roles holds what a backend keeps for each role of a state stream — a flat buffer, a
// device address, a list of engine tensors — so that its Store finds them by the role
// a stream names.
type Roles[T any] struct {
	Param, AdamM, AdamV, Grad T
}

// Of returns what is kept for role, and false for a role that is not one of the four.
func (r *Roles[T]) Of(role pb.TensorRole) (T, bool) {
	switch role {
	case pb.TensorRole_TENSOR_ROLE_PARAM:
		return r.Param, true
	case pb.TensorRole_TENSOR_ROLE_ADAM_M:
		return r.AdamM, true
	case pb.TensorRole_TENSOR_ROLE_ADAM_V:
		return r.AdamV, true
	case pb.TensorRole_TENSOR_ROLE_GRAD:
		return r.Grad, true
	}
	var zero T
	return zero, false
}

// Has reports whether role is one of the four (paramstate.Store's Has for a backend that
// keeps all of them).
func (r *Roles[T]) Has(role pb.TensorRole) bool {
	_, ok := r.Of(role)
	return ok
}
