package spool

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
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

// mustOpen opens the spool in dir or fails the test.
func mustOpen(t *testing.T, dir string, opts Options) *Spool {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
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
	s := mustOpen(t, dir, Options{SegmentBytes: 1 << 10})
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

	s = mustOpen(t, dir, Options{SegmentBytes: 1 << 10})
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
			s := mustOpen(t, dir, Options{})
			for i := range 10 {
				if err := s.Append(rec(i)); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			seg := filepath.Join(dir, fmt.Sprintf("%016d.wal", 0))
			fi, err := os.Stat(seg)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(seg, fi.Size()-int64(cut)); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, dir, Options{})
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
		s := mustOpen(t, dir, Options{CheckpointEvery: time.Hour})
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
		s = mustOpen(t, dir, Options{})
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

// TestSparesReused: freed segments are kept as spares and become the next
// segments, overwritten in place; after a crash, the frames of a spare's
// earlier life past the new records are not read back (their checksums
// cover the old segment number).
func TestSparesReused(t *testing.T) {
	fixed := func(i int) Record {
		return Record{Topic: "pricing-decisions", Key: "region", Value: fmt.Appendf(nil, `{"quoteId":"q-%04d"}`, i)}
	}
	checkFixed := func(t *testing.T, got []Record, from int) {
		t.Helper()
		for i, r := range got {
			if want := fixed(from + i); r.Key != want.Key || string(r.Value) != string(want.Value) {
				t.Fatalf("record %d = %+v, want %+v", from+i, r, want)
			}
		}
	}
	dir := t.TempDir()
	opts := Options{SegmentBytes: 1 << 10, Spares: 2}
	s := mustOpen(t, dir, opts)
	for i := range 100 {
		if err := s.Append(fixed(i)); err != nil {
			t.Fatal(err)
		}
	}
	_, pos := readN(t, s, 100)
	if err := s.Ack(pos); err != nil {
		t.Fatal(err)
	}
	spares, _ := filepath.Glob(filepath.Join(dir, "*.spare"))
	if len(spares) != 2 {
		t.Fatalf("spares %v, want 2", spares)
	}
	var spareInfo []os.FileInfo
	for _, p := range spares {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		spareInfo = append(spareInfo, fi)
	}
	// Fill the current segment and start one from a spare, part way. The
	// frames are all the same size, so the spare's earlier frames start
	// exactly where the new ones end.
	for i := 100; i < 110; i++ {
		if err := s.Append(fixed(i)); err != nil {
			t.Fatal(err)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.spare")); len(left) != 1 {
		t.Fatalf("spares after a rotation %v, want 1", left)
	}
	s.mu.Lock()
	last, end := s.segPath(s.wPos.Segment), s.wPos.Offset
	s.mu.Unlock()
	fi, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(fi, spareInfo[0]) && !os.SameFile(fi, spareInfo[1]) {
		t.Fatalf("%s is a new file, not a spare", last)
	}
	if fi.Size() <= end {
		t.Fatalf("%s: %d bytes for %d of records: no earlier frames left to skip", last, fi.Size(), end)
	}

	// A crash: open again without closing.
	s2 := mustOpen(t, dir, opts)
	defer s2.Close()
	got, _ := readN(t, s2, 10)
	checkFixed(t, got, 100)
	if s2.Pending() {
		got, _ := readN(t, s2, 1)
		t.Fatalf("read %+v past the last record", got)
	}
	if fi, err := os.Stat(last); err != nil || fi.Size() != end {
		t.Fatalf("%s after recovery: %v, %v; want %d bytes", last, fi.Size(), err, end)
	}
	if err := s2.Append(fixed(110)); err != nil {
		t.Fatal(err)
	}
	more, _ := readN(t, s2, 1)
	checkFixed(t, more, 110)
}

// TestEarlierFormatRead: segments of the earlier format (.seg, the checksum
// over the payload only), left by a previous version, are read after an
// upgrade; new records go to a new segment, and the old ones are deleted
// once acknowledged, not reused.
func TestEarlierFormatRead(t *testing.T) {
	dir := t.TempDir()
	var b []byte
	for i := range 5 {
		r := rec(i)
		payload := binary.BigEndian.AppendUint16(nil, uint16(len(r.Topic)))
		payload = append(payload, r.Topic...)
		payload = binary.BigEndian.AppendUint32(payload, uint32(len(r.Key)))
		payload = append(payload, r.Key...)
		payload = append(payload, r.Value...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
		b = binary.BigEndian.AppendUint32(b, crc32.Checksum(payload, crcTable))
		b = append(b, payload...)
	}
	old := filepath.Join(dir, fmt.Sprintf("%016d.seg", 7))
	if err := os.WriteFile(old, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "checkpoint"), []byte("7 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := mustOpen(t, dir, Options{})
	defer s.Close()
	if err := s.Append(rec(5)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("%016d.wal", 8))); err != nil {
		t.Fatalf("new records not in a new segment: %v", err)
	}
	got, pos := readN(t, s, 6)
	checkRecords(t, got, 0)
	if err := s.Ack(pos); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after its records were acknowledged: %v", old, err)
	}
	if spares, _ := filepath.Glob(filepath.Join(dir, "*.spare")); len(spares) != 0 {
		t.Errorf("spares %v: an earlier-format segment was kept for reuse", spares)
	}
}
