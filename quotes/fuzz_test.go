package quotes

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"

	"github.com/surgeworks/surge/inference"
)

// FuzzQuoteInput fuzzes the GraphQL PriceInput (regionId, productType,
// userId) through Quote, which validates it (resolve) before pricing, on a
// service without Redis, model or audit trail. Beyond not panicking:
//   - a refusal is an *InputError naming regionId, productType or userId,
//     wrapping ErrInvalidInput, ErrUnknownRegion or ErrUnknownProduct (the
//     error presenter's BAD_USER_INPUT and NOT_FOUND), with a message;
//   - what is priced is within the documented bounds (ValidateID's
//     identifiers, a userId of at most 128 bytes) and is a known
//     product, and the quote is a finite price within the rule's
//     multipliers, for the request's region and product.
func FuzzQuoteInput(f *testing.F) {
	for _, in := range [][3]string{
		{"berlin", "ride", ""}, {"berlin", "ride", "u-1"}, {"atlantis", "ride", ""}, {"berlin", "boat", "u-2"},
		{"", "ride", ""}, {"berlin", "", ""}, {"ber lin", "ride", ""}, {"berlin", "ride", strings.Repeat("u", 129)},
		{strings.Repeat("r", 65), "ride", ""}, {"berlin", "ride\x00", "ü"}, {"Berlin", "RIDE", ""}, {"berlin.", "ride-_", ""},
	} {
		f.Add(in[0], in[1], in[2])
	}
	s := New(fakeRules{berlinRide}, nil, inference.NewForecaster(nil, nil, inference.ForecasterOptions{Logger: slog.New(slog.DiscardHandler)}), nil,
		Options{Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, region, product, user string) {
		req := Request{RegionID: region, ProductType: product, UserID: user}
		q, err := s.Quote(ctx, req)
		if err != nil {
			var in *InputError
			switch {
			case !errors.As(err, &in):
				t.Fatalf("%+v: %v is not an InputError", req, err)
			case in.Field != "regionId" && in.Field != "productType" && in.Field != "userId":
				t.Fatalf("%+v: error %v names field %q", req, err, in.Field)
			case !errors.Is(err, ErrInvalidInput) && !errors.Is(err, ErrUnknownRegion) && !errors.Is(err, ErrUnknownProduct):
				t.Fatalf("%+v: error %v carries no code", req, err)
			case in.Msg == "":
				t.Fatalf("%+v: error without a message", req)
			}
			return
		}
		if ValidateID("regionId", region) != nil || ValidateID("productType", product) != nil || len(user) > 128 {
			t.Fatalf("%+v priced: out of the documented bounds", req)
		}
		if region != berlinRide.RegionID || product != berlinRide.ProductType {
			t.Fatalf("%+v priced, but not a priced product", req)
		}
		if q.RegionID != region || q.ProductType != product || q.ID == "" ||
			math.IsNaN(q.Price) || math.IsInf(q.Price, 0) || q.Price < 0 ||
			q.Multiplier < berlinRide.MinMultiplier || q.Multiplier > berlinRide.MaxMultiplier {
			t.Fatalf("%+v: quote %+v", req, q)
		}
		if user == "" && q.UserHash != "" || user != "" && len(q.UserHash) != 32 {
			t.Fatalf("%+v: user hash %q, want none without a user, else 32 hex digits", req, q.UserHash)
		}
	})
}
