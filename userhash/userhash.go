// Package userhash owns the keyed hash that replaces a user id wherever
// surge keeps one: quotes, audit records, events and experiment exposures.
// Components given the same key give the same hash, so an experiment's
// quotes and bookings join on it; nothing downstream sees the id itself.
package userhash

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"sync"
)

// Size is the length of a hash: 32 hex digits.
const Size = 2 * truncated

// truncated is how many bytes of the HMAC a hash keeps.
const truncated = 16

// Hasher hashes user ids with one key. It is safe for concurrent use.
type Hasher struct {
	macs sync.Pool // hash.Hash: HMAC-SHA256 keyed with the key
}

// New returns a Hasher keyed with key; an empty key takes a random one, so
// that hashes then differ between processes.
func New(key []byte) *Hasher {
	if len(key) == 0 {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
	}
	key = append([]byte(nil), key...)
	return &Hasher{macs: sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}}
}

// Hash is the hex of the first 16 bytes of HMAC-SHA256(key, id), or "" for
// no user ("").
func (h *Hasher) Hash(id string) string {
	if id == "" {
		return ""
	}
	mac := h.macs.Get().(hash.Hash)
	mac.Reset()
	mac.Write([]byte(id))
	var sum [sha256.Size]byte
	var out [Size]byte
	hex.Encode(out[:], mac.Sum(sum[:0])[:truncated])
	h.macs.Put(mac)
	return string(out[:])
}
