package quotes

import (
	"errors"
	"fmt"
)

// Errors a caller can act on; check them with errors.Is.
var (
	ErrUnknownRegion  = errors.New("unknown region")
	ErrUnknownProduct = errors.New("unknown product type")
	ErrQuoteNotFound  = errors.New("quote not found or expired")
	ErrInvalidInput   = errors.New("invalid input")
	// ErrAuditUnavailable: the quote's audit record could not be queued
	// (Kafka has been unreachable long enough to fill the buffer), so no
	// quote is given; retry later.
	ErrAuditUnavailable = errors.New("the audit trail cannot take the record of this quote now; retry shortly")
)

// InputError is bad input, naming the field.
type InputError struct {
	Field string
	Msg   string
	Err   error // one of the sentinel errors above
}

func (e *InputError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Msg) }
func (e *InputError) Unwrap() error { return e.Err }
