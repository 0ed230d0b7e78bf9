package loadtest

import (
	"math"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

func hist(count uint64, buckets ...[2]float64) *dto.Histogram {
	h := &dto.Histogram{SampleCount: proto.Uint64(count)}
	for _, b := range buckets {
		h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(b[0]), CumulativeCount: proto.Uint64(uint64(b[1]))})
	}
	return h
}

func TestHistQuantiles(t *testing.T) {
	// 100 observations between the scrapes: 40 in (0, 0.5], 50 in (0.5, 1], 10 in (1, 2].
	before := hist(10, [2]float64{0.5, 10}, [2]float64{1, 10}, [2]float64{2, 10})
	after := hist(110, [2]float64{0.5, 50}, [2]float64{1, 100}, [2]float64{2, 110})
	p50, p99, ok := histQuantiles(before, after)
	if !ok {
		t.Fatal("no quantiles")
	}
	// p50: rank 50, bucket (0.5, 1] holds ranks 40..90 → 0.5 + 0.5 × 10/50 = 0.6.
	// p99: rank 99, bucket (1, 2] holds ranks 90..100 → 1 + 1 × 9/10 = 1.9.
	if math.Abs(p50-0.6) > 1e-9 || math.Abs(p99-1.9) > 1e-9 {
		t.Fatalf("p50 %v p99 %v, want 0.6 and 1.9", p50, p99)
	}
	if _, _, ok := histQuantiles(after, after); ok {
		t.Fatal("quantiles of no new observations")
	}
}
