package userhash

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"testing"
)

// want is the definition, computed the long way.
func want(key []byte, id string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

func TestHash(t *testing.T) {
	key := []byte("a key of the deployment")
	h := New(key)
	for _, tc := range []struct{ id, want string }{
		{"", ""},
		{"user-1", want(key, "user-1")},
		{"user-2", want(key, "user-2")},
		{"ü-ñ 🙂", want(key, "ü-ñ 🙂")},
		{string(make([]byte, 300)), want(key, string(make([]byte, 300)))},
	} {
		// Twice: a reused MAC starts from the key again.
		for range 2 {
			if got := h.Hash(tc.id); got != tc.want {
				t.Errorf("Hash(%q) = %q, want %q", tc.id, got, tc.want)
			}
		}
	}
	if got := h.Hash("user-1"); len(got) != Size {
		t.Errorf("len %d, want %d", len(got), Size)
	}
	// The key is the hasher's own: changing the caller's slice changes nothing.
	key[0] = 'X'
	if got := h.Hash("user-1"); got != want([]byte("a key of the deployment"), "user-1") {
		t.Errorf("hash changed with the caller's key slice: %q", got)
	}
}

func TestHashKeys(t *testing.T) {
	a, b := New([]byte("k1")), New([]byte("k2"))
	if a.Hash("u") == b.Hash("u") {
		t.Error("two keys give the same hash")
	}
	if New([]byte("k1")).Hash("u") != a.Hash("u") {
		t.Error("the same key gives two hashes")
	}
	if r1, r2 := New(nil), New(nil); r1.Hash("u") == r2.Hash("u") {
		t.Error("two random keys give the same hash")
	}
}

func TestHashConcurrent(t *testing.T) {
	key := []byte("k")
	h := New(key)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				id := string(rune('a'+g)) + string(rune('a'+i%26))
				if got := h.Hash(id); got != want(key, id) {
					t.Errorf("Hash(%q) = %q", id, got)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkHash(b *testing.B) {
	h := New([]byte("k"))
	for b.Loop() {
		h.Hash("user-12345")
	}
}

func BenchmarkHashNewMAC(b *testing.B) {
	key := []byte("k")
	for b.Loop() {
		want(key, "user-12345")
	}
}
