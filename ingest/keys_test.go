package ingest

import (
	"errors"
	"net/http/httptest"
	"testing"
)

func TestAPIKeys(t *testing.T) {
	if APIKeys(nil) != nil {
		t.Fatal("no keys should leave the default identification")
	}
	id := APIKeys([]string{"alpha", "beta"})
	cases := []struct {
		key       string
		wantErr   error
		anonymous bool
	}{
		{"alpha", nil, false},
		{"beta", nil, false},
		{"gamma", ErrUnknownAPIKey, false},
		{"", nil, true},
	}
	for _, c := range cases {
		r := httptest.NewRequest("POST", "/v1/events", nil)
		if c.key != "" {
			r.Header.Set(APIKeyHeader, c.key)
		}
		got, err := id(r)
		if !errors.Is(err, c.wantErr) || (err == nil && got.Anonymous != c.anonymous) {
			t.Errorf("key %q: %+v %v", c.key, got, err)
		}
		if c.key == "alpha" && got != KeyClient("alpha") {
			t.Errorf("alpha identified as %+v", got)
		}
	}
}
