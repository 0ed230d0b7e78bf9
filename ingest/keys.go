package ingest

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
)

// ErrUnknownAPIKey is returned by an APIKeys identifier for a key it does not know.
var ErrUnknownAPIKey = errors.New("unknown API key")

// APIKeys returns an IntakeOptions.Identify that admits only the given API
// keys to the trusted client limit: a request with another key is refused
// (401), a request without a key is an anonymous client (by address, with
// the lower anonymous limit). With no keys it returns nil: every key is
// taken at its word (the default, for local use).
func APIKeys(keys []string) func(*http.Request) (ClientID, error) {
	if len(keys) == 0 {
		return nil
	}
	hashes := make([][32]byte, len(keys))
	for i, k := range keys {
		hashes[i] = sha256.Sum256([]byte(k))
	}
	return func(r *http.Request) (ClientID, error) {
		key := r.Header.Get(APIKeyHeader)
		if key == "" {
			return ClientFromRequest(r), nil
		}
		h := sha256.Sum256([]byte(key))
		known := 0
		for _, k := range hashes {
			known |= subtle.ConstantTimeCompare(h[:], k[:])
		}
		if known == 0 {
			return ClientID{}, ErrUnknownAPIKey
		}
		return KeyClient(key), nil
	}
}
