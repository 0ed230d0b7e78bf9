package resolvers

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/surgeworks/surge/analytics"
	"github.com/surgeworks/surge/auth"
	"github.com/surgeworks/surge/bookings"
	"github.com/surgeworks/surge/experiments"
	"github.com/surgeworks/surge/ingest"
	"github.com/surgeworks/surge/live"
	"github.com/surgeworks/surge/pricing"
	"github.com/surgeworks/surge/quotes"
	"github.com/surgeworks/surge/registry"
	"github.com/surgeworks/surge/rollout"
	"github.com/surgeworks/surge/rules"
)

// Error codes in extensions.code.
const (
	CodeBadUserInput    = "BAD_USER_INPUT"
	CodeNotFound        = "NOT_FOUND"
	CodeUnauthenticated = "UNAUTHENTICATED"
	CodeForbidden       = "FORBIDDEN"
	CodeInternal        = "INTERNAL_SERVER_ERROR"
	CodeBadRequest      = "BAD_REQUEST"
	CodeRateLimited     = "RATE_LIMITED"
	CodeUnavailable     = "UNAVAILABLE"
	CodeConflict        = "CONFLICT"
)

// ErrorPresenter gives every error an extensions.code (and extensions.field
// for bad input), and hides internal errors behind a generic message.
func ErrorPresenter(logger *slog.Logger) graphql.ErrorPresenterFunc {
	return func(ctx context.Context, err error) *gqlerror.Error {
		gerr := graphql.DefaultErrorPresenter(ctx, err)
		if gerr.Extensions == nil {
			gerr.Extensions = map[string]any{}
		}
		if _, ok := gerr.Extensions["code"]; ok {
			return gerr // parse and validation errors carry gqlgen's own codes
		}
		var in *quotes.InputError
		var fe *pricing.FieldError
		var xe *experiments.FieldError
		var be *bookings.FieldError
		switch {
		case errors.As(err, &in):
			gerr.Extensions["field"] = in.Field
			if errors.Is(err, quotes.ErrUnknownRegion) || errors.Is(err, quotes.ErrQuoteNotFound) {
				gerr.Extensions["code"] = CodeNotFound
			} else {
				gerr.Extensions["code"] = CodeBadUserInput
			}
		case errors.As(err, &fe):
			gerr.Extensions["code"] = CodeBadUserInput
			gerr.Extensions["field"] = fe.Field
			var fields []string
			for _, e := range unjoin(err) {
				if errors.As(e, &fe) {
					fields = append(fields, fe.Field)
				}
			}
			gerr.Extensions["fields"] = fields
		case errors.As(err, &xe) || errors.As(err, &be):
			code := CodeBadUserInput
			if errors.Is(err, bookings.ErrConflict) {
				code = CodeConflict
			}
			gerr.Extensions["code"] = code
			var fields []string
			for _, e := range unjoin(err) {
				switch {
				case errors.As(e, &xe):
					fields = append(fields, xe.Field)
				case errors.As(e, &be):
					fields = append(fields, be.Field)
				}
			}
			gerr.Extensions["field"] = fields[0]
			gerr.Extensions["fields"] = fields
		case errors.Is(err, experiments.ErrNotFound):
			gerr.Extensions["code"] = CodeNotFound
			gerr.Extensions["field"] = "id"
		case errors.Is(err, experiments.ErrExists), errors.Is(err, experiments.ErrStatus), errors.Is(err, experiments.ErrOverlap):
			gerr.Extensions["code"] = CodeConflict
			gerr.Extensions["field"] = "id"
		case errors.Is(err, experiments.ErrNoWinner):
			gerr.Extensions["code"] = CodeBadUserInput
			gerr.Extensions["field"] = "experimentId"
		case errors.Is(err, bookings.ErrUnavailable), errors.Is(err, errNoExperiments), errors.Is(err, errNoBookings), errors.Is(err, quotes.ErrAuditUnavailable):
			gerr.Extensions["code"] = CodeUnavailable
		case errors.Is(err, registry.ErrNotFound):
			gerr.Extensions["code"] = CodeNotFound
			gerr.Extensions["field"] = "version"
		case errors.Is(err, rollout.ErrRefused):
			gerr.Extensions["code"] = CodeBadUserInput
			gerr.Extensions["field"] = "version"
		case errors.Is(err, rollout.ErrConflict):
			gerr.Extensions["code"] = CodeConflict
		case errors.Is(err, live.ErrTooMany):
			gerr.Extensions["code"] = CodeTooManySubscriptions
		case errors.Is(err, errNoRollouts), errors.Is(err, errNoAccuracy), errors.Is(err, errNoLive):
			gerr.Extensions["code"] = CodeUnavailable
		case errors.Is(err, rules.ErrBackdated):
			gerr.Extensions["code"] = CodeBadUserInput
			gerr.Extensions["field"] = "effectiveFrom"
		case errors.Is(err, analytics.ErrInvalidRange):
			gerr.Extensions["code"] = CodeBadUserInput
			gerr.Extensions["field"] = "from"
		case errors.Is(err, ingest.ErrNoEvents) || errors.Is(err, ingest.ErrTooManyEvents):
			gerr.Extensions["code"] = CodeBadUserInput
			gerr.Extensions["field"] = "events"
		case errors.Is(err, ingest.ErrRateLimited) || errors.Is(err, ingest.ErrUnavailable):
			gerr.Extensions["code"] = CodeUnavailable
			if errors.Is(err, ingest.ErrRateLimited) {
				gerr.Extensions["code"] = CodeRateLimited
			}
			var re *ingest.RetryError
			if errors.As(err, &re) {
				gerr.Extensions["retryAfterSeconds"] = int(re.RetryAfter.Round(time.Second) / time.Second)
			}
		case errors.Is(err, auth.ErrUnauthenticated):
			gerr.Extensions["code"] = CodeUnauthenticated
		case errors.Is(err, auth.ErrForbidden):
			gerr.Extensions["code"] = CodeForbidden
		case gerr.Path == nil && gerr.Rule == "" && isRequestError(err):
			gerr.Extensions["code"] = CodeBadRequest
		default:
			logger.ErrorContext(ctx, "graphql resolver error", "path", gerr.Path.String(), "err", err, "trace_id", TraceID(ctx))
			gerr.Message = "internal error"
			gerr.Extensions["code"] = CodeInternal
		}
		return gerr
	}
}

// isRequestError tells errors about the request itself (bad JSON, unreadable
// body), which gqlgen reports without a path.
func isRequestError(err error) bool {
	var ge *gqlerror.Error
	return errors.As(err, &ge) && ge.Err == nil
}

// unjoin returns the errors joined inside err (looking through wrappers such
// as fmt.Errorf's %w, which rules.Store.Put adds), or err alone.
func unjoin(err error) []error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			return j.Unwrap()
		}
	}
	return []error{err}
}
