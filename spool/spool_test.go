package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func rec(i int) Record {
	return Record{Topic: "pricing-decisions", Key: fmt.Sprintf("region-%d", i%3), Value: []byte(fmt.Sprintf(`{"quoteId":"q-%d"}`, i))}
}

func readN(t *testing.T, s *Spool, n int) ([]Record, Position) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []Record
	var pos Position
	for len(out) < n {
		rs, p, err := s.Read(ctx, n-len(out))
		if err != nil {
			t.Fatalf("read after %d of %d: %v", len(out), n, err)
		}
		out, pos = append(out, rs...), p
	}
	return out, pos
}

func checkRecords(t *testing.T, got []Record, from int) {
	t.Helper()
	for i, r := range got {
		want := rec(from + i)
		if r.Topic != want.Topic || r.Key != want.Key || string(r.Value) != string(want.Value) {
			t.Fatalf("record %d = %+v, want %+v", from+i, r, want)
		}
	}
}

// TestAppendReadAckReopen: records come back in order across segments;
// after a reopen the reader starts at the checkpoint (what was read but not
// acknowledged comes again); acknowledged segments are deleted.
func TestAppendReadAckReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := s.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	segs, _ := s.segments()
	if len(segs) < 5 {
		t.Fatalf("%d segments for 200 records of 1 KiB segments", len(segs))
	}
	got, pos := readN(t, s, 120)
	checkRecords(t, got, 0)
	if err := s.Ack(pos); err != nil {
		t.Fatal(err)
	}
	more, _ := readN(t, s, 30) // read, not acknowledged
	checkRecords(t, more, 120)
	if after, _ := s.segments(); len(after) >= len(segs) {
		t.Errorf("segments %d after the ack, %d before: none deleted", len(after), len(segs))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(dir, Options{SegmentBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, pos = readN(t, s, 80)
	checkRecords(t, got, 120)
	if err := s.Append(rec(200)); err != nil {
		t.Fatal(err)
	}
	last, _ := readN(t, s, 1)
	checkRecords(t, last, 200)
	if err := s.Ack(pos); err != nil {
		t.Fatal(err)
	}
}

// TestTornTail: a frame cut short at the end (the process killed in the
// middle of a write) is dropped at Open; everything before it is read and
// appending goes on after it.
func TestTornTail(t *testing.T) {
	for _, cut := range []int{1, 5, 9, 20} {
		t.Run(fmt.Sprintf("cut %d bytes", cut), func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				if err := s.Append(rec(i)); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			seg := filepath.Join(dir, fmt.Sprintf("%016d.seg", 0))
			fi, err := os.Stat(seg)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(seg, fi.Size()-int64(cut)); err != nil {
				t.Fatal(err)
			}
			s, err = Open(dir, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, _ := readN(t, s, 9)
			checkRecords(t, got, 0)
			if s.Pending() {
				t.Fatal("the torn record is still pending")
			}
			if err := s.Append(rec(9)); err != nil {
				t.Fatal(err)
			}
			again, _ := readN(t, s, 1)
			checkRecords(t, again, 9)
		})
	}
}

// TestFull: past MaxBytes Append refuses; an acknowledgement that deletes
// a segment makes room again.
func TestFull(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MaxBytes: 4 << 10, SegmentBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := 0
	for ; ; n++ {
		err := s.Append(rec(n))
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n == 0 || s.Size() > 4<<10 {
		t.Fatalf("full after %d records at %d bytes", n, s.Size())
	}
	_, pos := readN(t, s, n)
	if err := s.Ack(pos); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(rec(n)); err != nil {
		t.Fatalf("after acknowledging everything: %v", err)
	}
}

// TestReadWaits: Read blocks until a record is appended, or ctx ends.
func TestReadWaits(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.Read(ctx, 10); !errors.Is(err, context.Canceled) {
		t.Fatalf("read of an empty spool with a cancelled context: %v", err)
	}
	done := make(chan []Record)
	go func() {
		rs, _, _ := s.Read(context.Background(), 10)
		done <- rs
	}()
	if err := s.Append(rec(0)); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, <-done, 0)
}

// BenchmarkAppend is the cost the audit spool adds to a quote: one framed
// write of a 2 KB record to the page cache.
func BenchmarkAppend(b *testing.B) {
	s, err := Open(b.TempDir(), Options{MaxBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	r := Record{Topic: "pricing-decisions", Key: "berlin", Value: make([]byte, 2048)}
	for b.Loop() {
		if err := s.Append(r); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCheckpointCoalesced: acks within CheckpointEvery move the checkpoint
// file once; a crash (no Close) then sends the records acknowledged since
// again, while Close saves the last ack.
func TestCheckpointCoalesced(t *testing.T) {
	for _, closeFirst := range []bool{false, true} {
		dir := t.TempDir()
		s, err := Open(dir, Options{CheckpointEvery: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			if err := s.Append(rec(i)); err != nil {
				t.Fatal(err)
			}
		}
		for range 10 {
			_, pos := readN(t, s, 1)
			if err := s.Ack(pos); err != nil {
				t.Fatal(err)
			}
		}
		if closeFirst {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		} else {
			s.w.Close() // as if killed: no final checkpoint
		}
		s, err = Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		got, _, _ := s.Read(ctx, 100)
		cancel()
		want := 9 // the first ack was saved at once, the nine after it were not
		if closeFirst {
			want = 0
		}
		if len(got) != want {
			t.Errorf("close %v: %d records again after the reopen, want %d", closeFirst, len(got), want)
		}
		s.Close()
	}
}

// TestAppendDuringSegmentDelete: deleting an acknowledged segment (slow on a
// busy disk) does not hold appends: an Append returns while the delete is
// still under way, and the segment is gone once it finishes.
func TestAppendDuringSegmentDelete(t *testing.T) {
	s, err := Open(t.TempDir(), Options{SegmentBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	started, release := make(chan string), make(chan struct{})
	s.remove = func(path string) error {
		started <- path
		<-release
		return os.Remove(path)
	}
	for i := range 100 {
		if err := s.Append(rec(i)); err != nil {
			t.Fatal(err)
		}
	}
	_, pos := readN(t, s, 100)
	acked := make(chan error, 1)
	go func() { acked <- s.Ack(pos) }()
	deleting := <-started // the first freed segment's delete is under way
	// An Append that waited for the delete would hang here.
	if err := s.Append(rec(100)); err != nil {
		t.Fatal(err)
	}
	close(release)
	go func() {
		for range started { // the other freed segments
		}
	}()
	if err := <-acked; err != nil {
		t.Fatal(err)
	}
	close(started)
	if _, err := os.Stat(deleting); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there after the checkpoint: %v", deleting, err)
	}
	last, _ := readN(t, s, 1)
	checkRecords(t, last, 100)
}
