package quotes

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateID(t *testing.T) {
	cases := []struct {
		id string
		ok bool
	}{
		{"berlin", true},
		{"new-york_1.b", true},
		{"", false},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"a b", false},
		{"a/b", false},
		{"é", false},
	}
	for _, c := range cases {
		err := ValidateID("regionId", c.id)
		if (err == nil) != c.ok {
			t.Errorf("ValidateID(%q) = %v, want ok=%v", c.id, err, c.ok)
		}
		var in *InputError
		if err != nil && (!errors.As(err, &in) || in.Field != "regionId" || !errors.Is(err, ErrInvalidInput)) {
			t.Errorf("ValidateID(%q) = %#v: want an InputError naming regionId", c.id, err)
		}
	}
}
