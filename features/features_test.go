package features

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestVector(t *testing.T) {
	at := time.Date(2026, 11, 28, 6, 0, 0, 0, time.UTC) // a Saturday, 06:00
	v := V1.Vector(nil, Online{Searches1m: 12, Supply: math.NaN(), DemandTrend: math.Inf(1)}, at, 60)
	if len(v) != V1.Len() {
		t.Fatalf("len %d", len(v))
	}
	want := map[string]float32{
		Searches1m:     12,
		Bookings1m:     0, // missing → default 0
		Supply:         0, // NaN → default
		DemandTrend:    1, // +Inf → default 1
		Seasonality:    1, // missing → default 1
		HourSin:        1, // 06:00 → sin(π/2)
		IsWeekend:      1,
		HorizonMinutes: 60,
	}
	for name, w := range want {
		if got := v[V1.Index(name)]; math.Abs(float64(got-w)) > 1e-6 {
			t.Errorf("%s = %v, want %v", name, got, w)
		}
	}
	// dst is reused when it has the right length.
	again := V1.Vector(v, Online{}, at, 5)
	if &again[0] != &v[0] || again[V1.Index(Searches1m)] != 0 {
		t.Fatal("Vector did not reuse or reset dst")
	}
}

func TestHash(t *testing.T) {
	if V1.Hash() != V1.Hash() || len(V1.Hash()) != 16 {
		t.Fatalf("hash %q not stable or not 16 hex digits", V1.Hash())
	}
	changed := append(Schema(nil), V1...)
	changed[0].Default = 1
	if changed.Hash() == V1.Hash() {
		t.Fatal("changing a default did not change the hash")
	}
	swapped := append(Schema(nil), V1...)
	swapped[0], swapped[1] = swapped[1], swapped[0]
	if swapped.Hash() == V1.Hash() {
		t.Fatal("changing the order did not change the hash")
	}
	if err := V1.CheckHash("deadbeef"); !errors.Is(err, ErrSchemaMismatch) {
		t.Fatalf("CheckHash = %v", err)
	}
	if err := V1.CheckHash(V1.Hash()); err != nil {
		t.Fatal(err)
	}
}

// The schemas this build serves: distinct hashes that name their version
// (a V2 model registered before V3 existed keeps loading), and the history a
// row of each needs.
func TestSchemas(t *testing.T) {
	for _, tt := range []struct {
		version string
		long    bool
		memory  int
	}{
		{"v1", false, 0},
		{"v2", true, 7*1440 + 1440}, // the window before the same window a week earlier, at 24 h
		{"v3", true, 21 * 1440},     // what followed three weeks earlier
	} {
		s := Schemas[tt.version]
		if got := Version(s.Hash()); got != tt.version {
			t.Errorf("Version(%s hash) = %q", tt.version, got)
		}
		if b, err := ByHash(s.Hash()); err != nil || b.Hash() != s.Hash() {
			t.Errorf("ByHash(%s) = %v", tt.version, err)
		}
		if s.LongMemory() != tt.long || s.MemoryMinutes() != tt.memory {
			t.Errorf("%s: LongMemory %v MemoryMinutes %d, want %v %d", tt.version, s.LongMemory(), s.MemoryMinutes(), tt.long, tt.memory)
		}
		if s.MemoryMinutes() > MemoryMinutes {
			t.Errorf("%s reads %d minutes back, more than the %d the consumer keeps", tt.version, s.MemoryMinutes(), MemoryMinutes)
		}
	}
	if V2.Hash() != "f652f89ad3046fce" {
		t.Errorf("V2's hash changed to %s: registered V2 models would be refused", V2.Hash())
	}
	if _, err := ByHash("deadbeef"); !errors.Is(err, ErrSchemaMismatch) || !strings.Contains(err.Error(), V3.Hash()+`" (v3)`) {
		t.Errorf("unknown hash: err = %v, want a mismatch naming every schema", err)
	}
}

func TestFromMinutes(t *testing.T) {
	var w []Minute
	// 15 minutes: searches 1..15, bookings half of that, supply = minute index.
	for i := 1; i <= 15; i++ {
		w = append(w, Minute{Searches: float64(i), Bookings: float64(i) / 2, Cancels: 1, Supply: float64(i), Weather: 0.5})
	}
	on := FromMinutes(w, 1.3)
	// last 5: 11..15 → mean 13; previous 10: 1..10 → mean 5.5; trend 13/5.5.
	want := Online{
		Searches1m: 15, Bookings1m: 7.5, Cancels1m: 1,
		Searches5m: 13, Bookings5m: 6.5, Searches15m: 8, Bookings15m: 4,
		Supply: 15, DemandTrend: 13 / 5.5, Seasonality: 1.3, SupplyDemand: 15.0 / 13,
		WeatherSeverity: 0.5, TrafficIndex: 0, LocalEvent: 0,
	}
	for k, v := range want {
		if math.Abs(on[k]-v) > 1e-12 {
			t.Errorf("%s = %v, want %v", k, on[k], v)
		}
	}
	if got := FromMinutes(nil, 0.8); got[Seasonality] != 0.8 || len(got) != 1 {
		t.Fatalf("empty window: %v", got)
	}
	// Fewer than 6 minutes: no trend can be computed.
	if got := FromMinutes(w[:3], 1); got[DemandTrend] != 1 || got[Searches5m] != 2 {
		t.Fatalf("short window: %v", got)
	}
}

func TestStoreRoundTrip(t *testing.T) {
	srv := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx := context.Background()
	s := NewStore(rdb, 2*time.Second)

	v, err := s.Get(ctx, "berlin")
	if err != nil || v.Found() {
		t.Fatalf("before any write: %+v %v", v, err)
	}
	at := time.UnixMilli(1_764_000_000_123).UTC()
	if err := s.Write(ctx, "berlin", Online{Searches1m: 42.5, Supply: 7}, at); err != nil {
		t.Fatal(err)
	}
	v, err = s.Get(ctx, "berlin")
	if err != nil || !v.Found() || !v.UpdatedAt.Equal(at) || v.Online[Searches1m] != 42.5 || v.Online[Supply] != 7 {
		t.Fatalf("after write: %+v %v", v, err)
	}
	if ttl := rdb.TTL(ctx, Key("berlin")).Val(); ttl <= 0 || ttl > 2*time.Second {
		t.Fatalf("TTL %v, want (0, 2s]", ttl)
	}

	// Several regions in one pipeline.
	p := rdb.Pipeline()
	a, b := Queue(ctx, p, "berlin"), Queue(ctx, p, "paris")
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	va, _ := a()
	vb, _ := b()
	if !va.Found() || vb.Found() {
		t.Fatalf("pipelined: berlin found=%v paris found=%v", va.Found(), vb.Found())
	}

	// The server going away is an error, not an empty answer.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "berlin"); err == nil {
		t.Fatal("Get with Redis down returned no error")
	}
}

// BenchmarkVector is the per-forecast cost of building a row from the
// online features: V1, and V2 with every long-memory window present.
func BenchmarkVector(b *testing.B) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	on := Online{Searches1m: 3, Supply: 10}
	Memory(on, func(from, to int) (float64, bool) { return float64(to - from), true }, Horizons)
	enc := &Encoding{RegionLevels: map[string]float64{"berlin": 2, "paris": 3}}
	for _, bc := range []struct {
		name string
		s    Schema
		in   Input
	}{
		{"v1", V1, Input{Online: on, At: at, Horizon: 15}},
		{"v2", V2, Input{Online: on, At: at, Horizon: 15, Region: "berlin", Encoding: enc}},
		{"v3", V3, Input{Online: on, At: at, Horizon: 15, Region: "berlin", Encoding: enc}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			dst := make([]float32, bc.s.Len())
			for b.Loop() {
				dst, _ = bc.s.VectorFor(dst, bc.in)
			}
		})
	}
}

func TestCalendar(t *testing.T) {
	c, err := ParseCalendar(" 2001-05-28,2001-01-01, 2001-05-28,")
	if err != nil || len(c) != 2 {
		t.Fatalf("ParseCalendar = %v, %v", c, err)
	}
	for _, tt := range []struct {
		at   time.Time
		want bool
	}{
		{time.Date(2001, 5, 28, 0, 0, 0, 0, time.UTC), true},
		{time.Date(2001, 5, 28, 23, 59, 0, 0, time.UTC), true},
		{time.Date(2001, 5, 29, 0, 0, 0, 0, time.UTC), false},
		{time.Date(2001, 1, 1, 12, 0, 0, 0, time.UTC), true},
		{time.Date(2000, 12, 31, 12, 0, 0, 0, time.UTC), false},
	} {
		if got := c.Has(tt.at); got != tt.want {
			t.Errorf("Has(%v) = %v, want %v", tt.at, got, tt.want)
		}
	}
	if _, err := ParseCalendar("2001-13-01"); err == nil || !strings.Contains(err.Error(), "2001-13-01") {
		t.Errorf("bad date: err = %v", err)
	}
}
