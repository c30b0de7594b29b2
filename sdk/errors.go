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
