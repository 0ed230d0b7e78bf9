// Package spool is a durable local queue of records on their way to Kafka:
// the audit trail's records are written to it before the quote they record
// is answered, and leave it only once Kafka acknowledged them, so that
// neither a Kafka outage nor a SIGKILL of the process loses one.
//
// Records are appended to segment files (NNNNNNNNNNNNNNNN.wal) as frames
// [length uint32][crc32c uint32][payload]; the payload is [topic length
// uint16][topic][key length uint32][key][value], and the checksum covers
// the segment's number (8 bytes, big-endian) followed by the payload.
// Append returns once the frame is written to the file (the page cache
// survives a crash of the process; Options.Sync also survives one of the
// machine). A reader takes records in order from the position in the
// checkpoint file, and Ack moves the checkpoint: segments wholly before it
// are freed. Freed segments are kept as spares (Options.Spares) and
// renamed to become the next segments, overwritten in place: deleting a
// large file stalls the filesystem (synchronously so on ext4 mounted with
// discard, where every Append waited tens of milliseconds behind it), and
// writing over allocated blocks is cheaper than growing a file. Frames left
// over from a segment's earlier life fail the checksum, since it covers
// the segment number. After a crash, Open drops a torn frame (or the old
// frames) at the end of the last segment, and the reader starts again at
// the checkpoint: records sent but not yet acknowledged are sent again (at
// least once; the ClickHouse sink drops the copies by quote id). Segments
// of the earlier format (NNNNNNNNNNNNNNNN.seg, the checksum over the
// payload only) are read and freed as before, never written.
package spool

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrFull is returned by Append when the spool holds Options.MaxBytes.
var ErrFull = errors.New("spool: full")

// Options configures a Spool. Zero values take the defaults.
type Options struct {
	// MaxBytes bounds the records waiting on disk (default 1 GiB): past it
	// Append refuses (ErrFull).
	MaxBytes int64
	// SegmentBytes is the size at which a new segment starts (default 64 MiB).
	SegmentBytes int64
	// Sync fsyncs every append (survives a machine crash; much slower).
	Sync bool
	// Spares is how many freed segments are kept to be reused (default 2;
	// negative: none, every freed segment is deleted). They take up to
	// Spares × SegmentBytes of disk beyond MaxBytes.
	Spares int
	// CheckpointEvery bounds how often Ack writes the checkpoint file
	// (default 100 ms; it is always written when Ack frees a segment, and
	// at Close). After a crash the records acknowledged since the last
	// checkpoint are sent again: at most that much more at least once.
	CheckpointEvery time.Duration
}

// Record is one Kafka record.
type Record struct {
	Topic string
	Key   string
	Value []byte
}

// Position is a place in the spool: a segment and a byte offset in it.
type Position struct {
	Segment uint64
	Offset  int64
}

func (p Position) before(q Position) bool {
	return p.Segment < q.Segment || p.Segment == q.Segment && p.Offset < q.Offset
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

const frameHeader = 8

// Spool is safe for concurrent use by appenders and one reader.
type Spool struct {
	dir  string
	opts Options

	mu      sync.Mutex
	ckMu    sync.Mutex // serialises checkpoints, which run without mu
	remove  func(string) error
	w       *os.File // the last segment, open for appending
	wPos    Position // end of the last segment
	acked   Position // everything before it is delivered
	saved   Position // what the checkpoint file says
	savedAt time.Time
	size    int64 // bytes of the segments on disk
	closed  bool
	notify  chan struct{} // closed and replaced at every append
	segSize map[uint64]int64
	wSeed   uint32          // the checksum seed of the segment appended to
	legacy  map[uint64]bool // segments of the earlier format (.seg); read-only after Open
	spares  []string        // freed segment files ready for reuse

	// the reader's cursor
	r     *os.File
	rBuf  *bufio.Reader
	rSeed uint32 // the checksum seed of the segment read
	rPos  Position
}

// Open opens (creating it if needed) the spool in dir and recovers it.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 1 << 30
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = 100 * time.Millisecond
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 64 << 20
	}
	if opts.Spares == 0 {
		opts.Spares = 2
	}
	opts.Spares = max(0, opts.Spares)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{dir: dir, opts: opts, notify: make(chan struct{}), segSize: map[uint64]int64{}, legacy: map[uint64]bool{}, remove: os.Remove}
	segs, err := s.segments()
	if err != nil {
		return nil, err
	}
	if s.spares, err = filepath.Glob(filepath.Join(dir, "*.spare")); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	for len(s.spares) > opts.Spares {
		if err := os.Remove(s.spares[len(s.spares)-1]); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		s.spares = s.spares[:len(s.spares)-1]
	}
	if s.acked, err = s.readCheckpoint(); err != nil {
		return nil, err
	}
	for _, seg := range segs {
		if seg < s.acked.Segment {
			if err := os.Remove(s.segPath(seg)); err != nil {
				return nil, fmt.Errorf("spool: %w", err)
			}
			continue
		}
		fi, err := os.Stat(s.segPath(seg))
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		s.segSize[seg] = fi.Size()
		s.size += fi.Size()
	}
	last := s.acked.Segment
	if len(segs) > 0 {
		last = max(last, segs[len(segs)-1])
	}
	end, err := s.recover(last)
	if err != nil {
		return nil, err
	}
	if s.acked.Segment == last && s.acked.Offset > end {
		s.acked.Offset = end // the segment lost its tail: nothing after it was acknowledged
	}
	s.rPos = s.acked
	s.saved = s.acked
	s.segSize[last] = end
	if s.legacy[last] {
		// Never append to the earlier format: the next segment is new.
		if s.w, err = os.Open(s.segPath(last)); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		s.wPos = Position{last, end}
		if err := s.rotate(); err != nil {
			return nil, err
		}
		return s, nil
	}
	if s.w, err = os.OpenFile(s.segPath(last), os.O_CREATE|os.O_WRONLY, 0o644); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if _, err := s.w.Seek(end, io.SeekStart); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s.wPos, s.wSeed = Position{last, end}, s.seed(last)
	return s, nil
}

// recover truncates a torn frame at the end of segment seg and returns
// the segment's valid length.
func (s *Spool) recover(seg uint64) (int64, error) {
	f, err := os.OpenFile(s.segPath(seg), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var off int64
	for {
		n, _, err := readFrame(br, s.seed(seg))
		if err != nil {
			break // io.EOF at a frame boundary, or a torn or corrupt frame
		}
		off += n
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	if fi.Size() != off {
		s.size -= fi.Size() - off
		if err := f.Truncate(off); err != nil {
			return 0, fmt.Errorf("spool: truncate a torn frame: %w", err)
		}
	}
	return off, nil
}

// Append writes a record; it returns once the frame is in the file.
func (s *Spool) Append(r Record) error {
	// The frame is built in one buffer, header then payload, that goes
	// back to framePool once written.
	bp := framePool.Get().(*[]byte)
	frame := slices.Grow((*bp)[:0], frameHeader+6+len(r.Topic)+len(r.Key)+len(r.Value))[:frameHeader]
	defer func() {
		if cap(frame) <= maxPooledFrame {
			*bp = frame[:0]
			framePool.Put(bp)
		}
	}()
	frame = binary.BigEndian.AppendUint16(frame, uint16(len(r.Topic)))
	frame = append(frame, r.Topic...)
	frame = binary.BigEndian.AppendUint32(frame, uint32(len(r.Key)))
	frame = append(frame, r.Key...)
	frame = append(frame, r.Value...)
	payload := frame[frameHeader:]
	binary.BigEndian.PutUint32(frame, uint32(len(payload)))

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("spool: closed")
	}
	if s.size+int64(len(frame)) > s.opts.MaxBytes {
		return ErrFull
	}
	if s.wPos.Offset > 0 && s.wPos.Offset+int64(len(frame)) > s.opts.SegmentBytes {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	binary.BigEndian.PutUint32(frame[4:], crc32.Update(s.wSeed, crcTable, payload))
	if _, err := s.w.Write(frame); err != nil {
		return fmt.Errorf("spool: append: %w", err)
	}
	if s.opts.Sync {
		if err := s.w.Sync(); err != nil {
			return fmt.Errorf("spool: sync: %w", err)
		}
	}
	s.wPos.Offset += int64(len(frame))
	s.segSize[s.wPos.Segment] = s.wPos.Offset
	s.size += int64(len(frame))
	close(s.notify)
	s.notify = make(chan struct{})
	return nil
}

// framePool holds Append's frame buffers, those of at most maxPooledFrame
// bytes.
var framePool = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledFrame = 64 << 10

// rotate starts the next segment, from a spare when there is one: a
// rename, and writes over its blocks. The full segment loses what is left
// of its earlier life past its end (less than a frame), so that every
// segment but the last is exactly as long as its records.
func (s *Spool) rotate() error {
	if !s.legacy[s.wPos.Segment] {
		if err := s.w.Truncate(s.wPos.Offset); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	if err := s.w.Close(); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	next := s.wPos.Segment + 1
	flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if n := len(s.spares); n > 0 {
		if err := os.Rename(s.spares[n-1], s.segPath(next)); err != nil {
			return fmt.Errorf("spool: reuse a spare segment: %w", err)
		}
		s.spares = s.spares[:n-1]
		flags = os.O_WRONLY
	}
	w, err := os.OpenFile(s.segPath(next), flags, 0o644)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.w, s.wPos, s.wSeed = w, Position{next, 0}, s.seed(next)
	s.segSize[next] = 0
	return nil
}

// seed is the checksum of segment seg's number, which every frame's
// checksum starts from (0 for the earlier format, over the payload only).
func (s *Spool) seed(seg uint64) uint32 {
	if s.legacy[seg] {
		return 0
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seg)
	return crc32.Checksum(b[:], crcTable)
}

// Read returns up to n records after the reader's cursor, waiting for one
// until ctx ends, and the position after the last one (to Ack once they
// are delivered). One goroutine reads.
func (s *Spool) Read(ctx context.Context, n int) ([]Record, Position, error) {
	for {
		s.mu.Lock()
		end, notify := s.wPos, s.notify
		s.mu.Unlock()
		if s.rPos.before(end) {
			return s.readUpTo(n, end)
		}
		select {
		case <-ctx.Done():
			return nil, s.rPos, ctx.Err()
		case <-notify:
		}
	}
}

// Pending reports whether records wait after the reader's cursor.
func (s *Spool) Pending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rPos.before(s.wPos)
}

func (s *Spool) readUpTo(n int, end Position) ([]Record, Position, error) {
	var out []Record
	for len(out) < n && s.rPos.before(end) {
		if s.r == nil {
			f, err := os.Open(s.segPath(s.rPos.Segment))
			if err != nil {
				return out, s.rPos, fmt.Errorf("spool: %w", err)
			}
			if _, err := f.Seek(s.rPos.Offset, io.SeekStart); err != nil {
				f.Close()
				return out, s.rPos, fmt.Errorf("spool: %w", err)
			}
			s.r, s.rBuf, s.rSeed = f, bufio.NewReaderSize(f, 1<<16), s.seed(s.rPos.Segment)
		}
		s.mu.Lock()
		segEnd := s.segSize[s.rPos.Segment]
		s.mu.Unlock()
		if s.rPos.Offset >= segEnd && s.rPos.Segment < end.Segment {
			s.r.Close()
			s.r, s.rBuf = nil, nil
			s.rPos = Position{s.rPos.Segment + 1, 0}
			continue
		}
		size, rec, err := readFrame(s.rBuf, s.rSeed)
		if err != nil {
			return out, s.rPos, fmt.Errorf("spool: read at %d/%d: %w", s.rPos.Segment, s.rPos.Offset, err)
		}
		s.rPos.Offset += size
		out = append(out, rec)
	}
	return out, s.rPos, nil
}

// Ack records that everything before pos is delivered: the checkpoint
// moves there and the segments wholly before it are freed.
func (s *Spool) Ack(pos Position) error {
	s.mu.Lock()
	if !s.acked.before(pos) {
		s.mu.Unlock()
		return nil
	}
	s.acked = pos
	frees := false
	for seg := range s.segSize {
		frees = frees || seg < pos.Segment
	}
	due := frees || time.Since(s.savedAt) >= s.opts.CheckpointEvery
	s.mu.Unlock()
	if !due {
		return nil
	}
	return s.checkpoint()
}

// checkpoint writes the acknowledged position and frees the segments
// wholly before it: kept as spares, or deleted past Options.Spares. The
// files are written, renamed and deleted without s.mu: deleting a 64 MiB
// segment takes up to a few hundred milliseconds on a busy disk, and every
// quote's Append waited for it (a p99 of 60–300 ms at 1,000 quotes/s each
// time a segment was freed, about every 30 s).
func (s *Spool) checkpoint() error {
	s.ckMu.Lock()
	defer s.ckMu.Unlock()
	s.mu.Lock()
	pos := s.acked
	s.mu.Unlock()
	tmp := filepath.Join(s.dir, "checkpoint.tmp")
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d %d\n", pos.Segment, pos.Offset)), 0o644); err != nil {
		return fmt.Errorf("spool: checkpoint: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "checkpoint")); err != nil {
		return fmt.Errorf("spool: checkpoint: %w", err)
	}
	var drop []string
	s.mu.Lock()
	s.saved, s.savedAt = pos, time.Now()
	spares := len(s.spares)
	for seg, size := range s.segSize {
		if seg >= pos.Segment {
			continue
		}
		s.size -= size
		delete(s.segSize, seg)
		path := s.segPath(seg)
		if spares < s.opts.Spares && !s.legacy[seg] {
			// Renamed under s.mu, so rotate never misses a spare or
			// takes one twice; a rename does not touch the blocks.
			spare := filepath.Join(s.dir, fmt.Sprintf("%016d.spare", seg))
			if err := os.Rename(path, spare); err != nil {
				s.mu.Unlock()
				return fmt.Errorf("spool: keep a spare segment: %w", err)
			}
			s.spares = append(s.spares, spare)
			spares++
			continue
		}
		drop = append(drop, path)
	}
	s.mu.Unlock()
	for _, path := range drop {
		if err := s.remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("spool: %w", err)
		}
	}
	return nil
}

// Size is the bytes of the segments on disk (delivered records included
// until their segment is deleted).
func (s *Spool) Size() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Close closes the files; what is not acknowledged stays for the next Open.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.r != nil {
		s.r.Close()
	}
	pending := s.saved.before(s.acked)
	s.mu.Unlock()
	var err error
	if pending {
		err = s.checkpoint()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(err, s.w.Close())
}

func (s *Spool) segPath(seg uint64) string {
	if s.legacy[seg] {
		return filepath.Join(s.dir, fmt.Sprintf("%016d.seg", seg))
	}
	return filepath.Join(s.dir, fmt.Sprintf("%016d.wal", seg))
}

// segments lists the segments on disk, and notes those of the earlier
// format.
func (s *Spool) segments() ([]uint64, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var segs []uint64
	for _, e := range ents {
		name, ext := e.Name(), filepath.Ext(e.Name())
		if ext != ".wal" && ext != ".seg" {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(name, ext), 10, 64)
		if err != nil {
			continue
		}
		segs = append(segs, n)
		if ext == ".seg" {
			s.legacy[n] = true
		}
	}
	slices.Sort(segs)
	return slices.Compact(segs), nil
}

func (s *Spool) readCheckpoint() (Position, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "checkpoint"))
	if errors.Is(err, os.ErrNotExist) {
		segs, err := s.segments()
		if err != nil || len(segs) == 0 {
			return Position{}, err
		}
		return Position{Segment: segs[0]}, nil
	}
	if err != nil {
		return Position{}, fmt.Errorf("spool: checkpoint: %w", err)
	}
	var p Position
	if _, err := fmt.Sscanf(string(b), "%d %d", &p.Segment, &p.Offset); err != nil {
		return Position{}, fmt.Errorf("spool: checkpoint %q: %w", b, err)
	}
	return p, nil
}

// readFrame reads one frame of a segment whose checksums start from seed;
// it returns its size on disk.
func readFrame(r *bufio.Reader, seed uint32) (int64, Record, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, Record{}, err
	}
	n := binary.BigEndian.Uint32(h[:])
	if n > 64<<20 {
		return 0, Record{}, errors.New("corrupt frame length")
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, Record{}, io.ErrUnexpectedEOF
	}
	if crc32.Update(seed, crcTable, payload) != binary.BigEndian.Uint32(h[4:]) {
		return 0, Record{}, errors.New("frame checksum mismatch")
	}
	if len(payload) < 6 {
		return 0, Record{}, errors.New("short frame")
	}
	tl := int(binary.BigEndian.Uint16(payload))
	if 2+tl+4 > len(payload) {
		return 0, Record{}, errors.New("bad topic length")
	}
	topic := string(payload[2 : 2+tl])
	kl := int(binary.BigEndian.Uint32(payload[2+tl:]))
	if 6+tl+kl > len(payload) {
		return 0, Record{}, errors.New("bad key length")
	}
	key := string(payload[6+tl : 6+tl+kl])
	return frameHeader + int64(n), Record{Topic: topic, Key: key, Value: payload[6+tl+kl:]}, nil
}
