package loadtest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Closed sends requests back to back from opts.Concurrency workers (closed
// loop) for opts.Duration: Result.Achieved is the throughput the server
// sustains. Rate is ignored.
func Closed(ctx context.Context, opts Options) (Result, error) {
	if opts.Duration <= 0 {
		opts.Duration = 10 * time.Second
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 32
	}
	client := newClient(opts.Concurrency)
	ctx, cancel := context.WithTimeout(ctx, opts.Duration)
	defer cancel()
	var (
		mu       sync.Mutex
		lat      []time.Duration
		errs     int
		firstErr string
		sent     atomic.Int64
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range opts.Concurrency {
		wg.Go(func() {
			var mine []time.Duration
			for ctx.Err() == nil {
				t := time.Now()
				sent.Add(1)
				err := do(ctx, client, opts)
				if ctx.Err() != nil {
					break // cut off by the end of the run, not the server's fault
				}
				mine = append(mine, time.Since(t))
				if err != nil {
					mu.Lock()
					errs++
					if firstErr == "" {
						firstErr = err.Error()
					}
					mu.Unlock()
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	res := summarize(lat, time.Since(start), errs, firstErr)
	res.Sent = int(sent.Load())
	return res, nil
}

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// Linux whatever the kernel's own tick).
const userHZ = 100

// ProcessCPU is the CPU time a process has used so far, user and system,
// all its threads (/proc/<pid>/stat).
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read process CPU time: %w", err)
	}
	// The command name (field 2) may hold spaces: count from after its ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// Cost is what a run cost the server: its CPU time per completed request,
// all goroutines included (consumers, background writes, GC), and the
// share of a core it used.
type Cost struct {
	Result
	CPU        time.Duration // the server's CPU time over the run
	PerRequest time.Duration
	Cores      float64
}

func (c Cost) String() string {
	return fmt.Sprintf("%s  server CPU %s = %s per request (%.2f cores)", c.Result, c.CPU.Round(time.Millisecond), c.PerRequest.Round(time.Microsecond), c.Cores)
}

// MeasureCost runs Run (open loop at opts.Rate) and reads the server's CPU
// time before and after.
func MeasureCost(ctx context.Context, opts Options, pid int) (Cost, error) {
	before, err := ProcessCPU(pid)
	if err != nil {
		return Cost{}, err
	}
	start := time.Now()
	res, err := Run(ctx, opts)
	if err != nil {
		return Cost{Result: res}, err
	}
	after, err := ProcessCPU(pid)
	if err != nil {
		return Cost{Result: res}, err
	}
	c := Cost{Result: res, CPU: after - before, Cores: (after - before).Seconds() / time.Since(start).Seconds()}
	if done := res.OK + res.Errors; done > 0 {
		c.PerRequest = c.CPU / time.Duration(done)
	}
	return c, nil
}
