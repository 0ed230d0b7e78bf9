package experiments

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
)

// Buckets is how many buckets users are hashed into: weights have a
// resolution of 0.01 %.
const Buckets = 10_000

// Bucket is the bucket of a user in an experiment: a deterministic hash of
// (salt, user), so a user always lands in the same bucket of an experiment,
// and experiments with different salts are independent of each other.
func Bucket(salt, userID string) int {
	h := sha256.New()
	h.Write([]byte(salt))
	h.Write([]byte{0})
	h.Write([]byte(userID))
	var sum [sha256.Size]byte
	return int(binary.BigEndian.Uint64(h.Sum(sum[:0])[:8]) % Buckets)
}

// variantOf maps a bucket to a variant: variant i owns the buckets from
// the sum of the weights before it (in hundredths of a percent) on.
func (e *Experiment) variantOf(bucket int) int {
	upper := 0
	for i, v := range e.Variants {
		upper += int(math.Round(v.Weight * 100))
		if bucket < upper {
			return i
		}
	}
	return len(e.Variants) - 1
}

// Assignment is the variant a request is priced with.
type Assignment struct {
	ExperimentID string
	Variant      string
	// Control says whether the variant is the experiment's control.
	Control  bool
	Strategy Strategy
}
