package sdk

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// InvalidArgument reports a malformed request field. field is the field's
// path in the request, e.g. "batch.tokens[17]"; the host shows it verbatim.
func InvalidArgument(field, format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, fmt.Sprintf(format, args...))
}

// FailedPrecondition reports a call made out of order, e.g. a training call
// before Configure.
func FailedPrecondition(format string, args ...any) error {
	return status.Errorf(codes.FailedPrecondition, format, args...)
}

// ResourceExhausted reports that the backend ran out of memory.
func ResourceExhausted(format string, args ...any) error {
	return status.Errorf(codes.ResourceExhausted, format, args...)
}

// Unimplemented reports a call or capability the backend does not provide.
func Unimplemented(what string) error {
	return status.Errorf(codes.Unimplemented, "%s is not implemented by this backend", what)
}

// NotFound reports an unknown cache handle or tensor name.
func NotFound(format string, args ...any) error {
	return status.Errorf(codes.NotFound, format, args...)
}

// Code returns the protocol status code carried by err, searching wrapped
// errors; codes.OK for nil and codes.Unknown for errors without one.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code()
	}
	return codes.Unknown
}

// statusError is a backend's status as the host shows it to users: the code's
// name, then the backend's message ("InvalidArgument: model.vocab_size: must be
// positive, got 0"), where gRPC's own text is "rpc error: code = InvalidArgument
// desc = …". Callers still reach the status through GRPCStatus (errors.As, Code,
// status.Code) and the error gRPC returned through Unwrap.
type statusError struct {
	st  *status.Status
	err error
}

func (e *statusError) Error() string {
	if e.st.Message() == "" {
		return e.st.Code().String()
	}
	return e.st.Code().String() + ": " + e.st.Message()
}

func (e *statusError) GRPCStatus() *status.Status { return e.st }

func (e *statusError) Unwrap() error { return e.err }

// readableStatus returns err as a statusError when it is a status error as
// the gRPC client returns it; any other error is returned as it is.
func readableStatus(err error) error {
	if _, done := err.(*statusError); done {
		return err
	}
	se, ok := err.(interface{ GRPCStatus() *status.Status })
	if !ok || se.GRPCStatus() == nil {
		return err
	}
	return &statusError{st: se.GRPCStatus(), err: err}
}

// toStatus turns a backend error into the status the host receives: errors
// that already carry a status keep it, anything else becomes INTERNAL.
func toStatus(method string, err error) error {
	if err == nil {
		return nil
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Err()
	}
	return status.Errorf(codes.Internal, "%s: %v", method, err)
}
