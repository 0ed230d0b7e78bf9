package training

import (
	"context"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/surgeworks/surge/features"
	"github.com/surgeworks/surge/model"
)

// ramp is a 20-minute history whose minute i has i searches, starting on a
// Wednesday at 10:00 UTC.
func ramp() RegionHistory {
	start := time.Date(2026, 1, 7, 10, 0, 0, 0, time.UTC)
	h := RegionHistory{Region: RegionSpec{ID: "r"}}
	for i := range 20 {
		h.Minutes = append(h.Minutes, features.Minute{
			Start: start.Add(time.Duration(i) * time.Minute), Searches: float64(i), Bookings: 1, Supply: 30,
		})
	}
	return h
}

func TestBuildDatasetHandComputed(t *testing.T) {
	s := features.V1
	col := func(name string) int { return s.Index(name) }
	X, y := BuildDataset([]RegionHistory{ramp()}, s, []int{1, 3}, 1)
	// t = 14..18 for horizon 1, t = 14..16 for horizon 3.
	if len(X) != 8 || len(y) != 8 {
		t.Fatalf("%d rows, %d targets; want 8", len(X), len(y))
	}
	wantY := []float32{15, 15 + 16 + 17, 16, 16 + 17 + 18, 17, 17 + 18 + 19, 18, 19}
	if !reflect.DeepEqual(y, wantY) {
		t.Fatalf("targets = %v, want %v", y, wantY)
	}
	first := X[0]
	checks := []struct {
		name string
		want float32
	}{
		{features.Searches1m, 14},
		{features.Searches5m, 12},        // mean of 10..14
		{features.Searches15m, 7},        // mean of 0..14
		{features.DemandTrend, 12 / 4.5}, // last 5 against the 10 before: 12 / mean(0..9)
		{features.HorizonMinutes, 1},
		{features.Supply, 30},
		{features.SupplyDemand, 2.5}, // 30 / 12
		{features.IsWeekend, 0},
		{features.HourSin, float32(math.Sin(2 * math.Pi * (10 + 15.0/60) / 24))}, // end of minute 14 is 10:15
	}
	for _, c := range checks {
		if got := first[col(c.name)]; math.Abs(float64(got-c.want)) > 1e-6 {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
	if X[1][col(features.HorizonMinutes)] != 3 || X[7][col(features.Searches1m)] != 18 {
		t.Errorf("rows are not ordered by time then horizon")
	}
	// Seasonality from the region's own history: one hour of data, index 1.
	if got := first[col(features.Seasonality)]; got != 1 {
		t.Errorf("seasonality = %v, want 1", got)
	}

	Xs, _ := BuildDataset([]RegionHistory{ramp()}, s, []int{1, 3}, 2)
	if len(Xs) != 5 { // t = 14, 16, 18 for h=1; 14, 16 for h=3
		t.Fatalf("stride 2: %d rows, want 5", len(Xs))
	}
	if X, _ := BuildDataset([]RegionHistory{ramp()}, s, []int{4}, 1); len(X) != 2 { // t = 14, 15
		t.Fatalf("horizon 4: %d rows, want 2", len(X))
	}
}

func TestBootstrap(t *testing.T) {
	e, rep, err := Bootstrap(context.Background(), BootstrapOptions{Version: "v-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %+v", rep)
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	s := features.V1
	if e.Meta.Name != "demand" || e.Meta.Version != "v-test" || e.Meta.SchemaHash != s.Hash() ||
		!reflect.DeepEqual(e.Meta.FeatureNames, s.Names()) || e.NumFeatures != s.Len() || e.Meta.TrainedAt.IsZero() {
		t.Fatalf("metadata = %+v", e.Meta)
	}
	if err := s.CheckHash(e.Meta.SchemaHash); err != nil {
		t.Fatal(err)
	}
	if imp := e.Meta.ImportanceGain(); len(imp) != s.Len() || !(imp[features.HorizonMinutes] > 0) {
		t.Fatalf("importance by name = %v, want every feature and a positive gain for %s", imp, features.HorizonMinutes)
	}
	if rep.TrainRows == 0 || rep.HoldoutRows == 0 || rep.Trees == 0 {
		t.Fatalf("report = %+v", rep)
	}
	if rep.RMSE > 0.5*rep.BaselineRMSE || rep.WAPE > 0.5*rep.BaselineWAPE {
		t.Errorf("model RMSE %.1f WAPE %.3f vs mean baseline %.1f / %.3f: want far better", rep.RMSE, rep.WAPE, rep.BaselineRMSE, rep.BaselineWAPE)
	}
	if rep.WAPE >= rep.NaiveWAPE {
		t.Errorf("model WAPE %.3f does not beat persistence %.3f", rep.WAPE, rep.NaiveWAPE)
	}
	if e.Meta.Metrics["holdout_wape"] != rep.WAPE || e.Meta.Params["horizons"] != "5,15,60" {
		t.Errorf("metrics/params not recorded: %v %v", e.Meta.Metrics, e.Meta.Params)
	}
	b, err := e.MarshalONNX()
	if err != nil {
		t.Fatal(err)
	}
	back, err := model.UnmarshalONNX(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Meta.SchemaHash != s.Hash() || back.Meta.Version != "v-test" || !reflect.DeepEqual(back.Meta.Importance, e.Meta.Importance) {
		t.Fatalf("metadata lost in ONNX: %+v", back.Meta)
	}
}

func TestBootstrapRejectsHoldoutLongerThanHistory(t *testing.T) {
	_, _, err := Bootstrap(context.Background(), BootstrapOptions{History: HistoryOptions{Days: 2}, HoldoutDays: 2})
	if !errors.Is(err, ErrBadInput) {
		t.Fatalf("Bootstrap = %v, want ErrBadInput", err)
	}
}
