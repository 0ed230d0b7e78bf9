// Package devenv owns the local dependencies of the service during
// development and tests: it starts Redis (one server, or a Redis Cluster of
// masters and replicas) and ClickHouse as supervised child processes (own
// process group, killed with the parent, logs in their data directory) and
// an in-process Kafka broker (kfake), and stops them again.
//
// Nothing here is meant for production: production points at real servers
// by address.
package devenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrBinaryNotFound is returned (wrapped) when a server binary is missing.
var ErrBinaryNotFound = errors.New("server binary not found (run `make deps`)")

// stopGrace is how long Stop waits after SIGTERM before it sends SIGKILL.
const stopGrace = 10 * time.Second

// maxBindAttempts bounds the retries when a port picked by us is taken by
// someone else between our probe and the server's bind.
const maxBindAttempts = 4

// Process is a running (or stopped) server child process. Its methods are
// safe for concurrent use.
type Process struct {
	// Name is a short label such as "redis" or "clickhouse".
	Name string
	// Addr is what clients use, host:port (Redis protocol, or ClickHouse's
	// native protocol).
	Addr string
	// HTTPAddr is ClickHouse's HTTP interface (host:port); empty for Redis.
	HTTPAddr string
	// Dir is the data directory, which also holds the logs.
	Dir string
	// LogPath is the file receiving the child's stdout and stderr.
	LogPath string

	logger *slog.Logger
	// launch starts one incarnation on the current addresses; it is
	// called with p.mu held.
	launch func(ctx context.Context) (*child, error)
	// logs are the files whose new lines go into a start-up error: the
	// stdout/stderr log and the server's own error log if it has one.
	logs []string

	mu  sync.Mutex
	cur *child
}

type child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done is closed
}

// PID returns the process id of the running incarnation, or 0.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil || p.cur.exited() {
		return 0
	}
	return p.cur.cmd.Process.Pid
}

// Done returns a channel closed when the current incarnation exits, for a
// supervisor that wants to notice a crash. It is nil when nothing runs.
func (p *Process) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == nil {
		return nil
	}
	return p.cur.done
}

// Stop sends SIGTERM to the process group, waits up to 10 s, then sends
// SIGKILL. It is idempotent; it returns an error only when the server had to
// be killed or could not be signalled.
func (p *Process) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopLocked()
}

func (p *Process) stopLocked() error {
	c := p.cur
	if c == nil || c.exited() {
		return nil
	}
	start := time.Now()
	if err := c.signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("devenv: stop %s: %w", p.Name, err)
	}
	select {
	case <-c.done:
		p.logger.Info("devenv: stopped", "name", p.Name, "addr", p.Addr, "took", time.Since(start).Round(time.Millisecond))
		return nil
	case <-time.After(stopGrace):
	}
	_ = c.signal(syscall.SIGKILL)
	<-c.done
	return fmt.Errorf("devenv: stop %s: no exit %v after SIGTERM, killed", p.Name, stopGrace)
}

// Kill sends SIGKILL to the process group now and waits for the exit, to
// simulate a crash. It is idempotent.
func (p *Process) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.cur
	if c == nil || c.exited() {
		return nil
	}
	if err := c.signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("devenv: kill %s: %w", p.Name, err)
	}
	<-c.done
	p.logger.Info("devenv: killed", "name", p.Name, "addr", p.Addr)
	return nil
}

// Restart starts the server again on the same addresses and data
// directory, stopping it first if it still runs. It returns once the server
// answers.
func (p *Process) Restart(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.stopLocked(); err != nil {
		return err
	}
	// The address is fixed now: if something else grabbed the port in the
	// meantime, give it a moment.
	var err error
	for attempt := 0; attempt < maxBindAttempts; attempt++ {
		var c *child
		c, err = p.launch(ctx)
		if err == nil {
			p.cur = c
			return nil
		}
		if !errors.Is(err, errAddrInUse) || attempt == maxBindAttempts-1 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("devenv: restart %s: %w (last: %w)", p.Name, ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("devenv: restart %s: %w", p.Name, err)
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// signal signals the child's whole process group (the child is its leader).
func (c *child) signal(sig syscall.Signal) error {
	err := syscall.Kill(-c.cmd.Process.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil // already gone, Wait will report it
	}
	return err
}

// errAddrInUse marks a start failure caused by a port already bound.
var errAddrInUse = errors.New("address already in use")

// spawn starts bin with args in its own process group, stdout and stderr
// appended to logPath. The child gets SIGKILL when the parent dies
// (Pdeathsig; Linux ties it to the creating OS thread, which the Go runtime
// does not retire while other goroutines run).
func spawn(bin string, args []string, dir, logPath string) (*child, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	defer logFile.Close() // the child holds its own copy

	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = os.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true,
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// waitReady polls ready every 25 ms until it succeeds, the child exits, ctx
// ends or timeout passes. On failure it kills the child. A probe is cut
// short when the child exits (a probe can otherwise hang on whoever else
// holds the port).
func waitReady(ctx context.Context, c *child, timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	probeParent, cancelProbes := context.WithCancel(ctx)
	defer cancelProbes()
	go func() {
		select {
		case <-c.done:
			cancelProbes()
		case <-probeParent.Done():
		}
	}()
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		probeCtx, probeCancel := context.WithTimeout(probeParent, time.Second)
		last = ready(probeCtx)
		probeCancel()
		if last == nil {
			return nil
		}
		select {
		case <-c.done:
			return fmt.Errorf("exited during start-up: %v", c.err)
		case <-ctx.Done():
			_ = c.signal(syscall.SIGKILL)
			<-c.done
			return fmt.Errorf("not ready: %w (last probe: %v)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// resolveAddr turns "" into 127.0.0.1:0 and a port 0 into a free port. It
// reports whether the port was picked by us (and so may be re-picked).
func resolveAddr(addr string) (string, bool, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", false, fmt.Errorf("address %q: %w", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	if port != "0" {
		return net.JoinHostPort(host, port), false, nil
	}
	free, err := freePort(host)
	if err != nil {
		return "", false, err
	}
	return net.JoinHostPort(host, strconv.Itoa(free)), true, nil
}

// checkFree fails with errAddrInUse when something already listens on one
// of addrs. Without it a start-up probe could be answered by that other
// server (say a system Redis on 6379) while our child dies on bind.
func checkFree(addrs ...string) error {
	for _, addr := range addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("%s: %w", addr, errAddrInUse)
			}
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		ln.Close()
	}
	return nil
}

// freePort asks the kernel for a free port by listening on :0 and closing
// it. Another process may take it before the server binds, hence the
// retries in the callers.
func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("pick a free port on %s: %w", host, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// binaryOrFind returns explicit if it is an executable file, or else looks
// name up with findBinary.
func binaryOrFind(explicit, name string) (string, error) {
	if explicit == "" {
		return findBinary(name)
	}
	if st, err := os.Stat(explicit); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("devenv: %s is not an executable file: %w", explicit, ErrBinaryNotFound)
	}
	return explicit, nil
}

// binaryDirs are searched after PATH.
var binaryDirs = []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"}

// findBinary looks for the first of names on PATH and then in the usual
// install directories (PATH of non-root users often lacks /usr/sbin, where
// Debian puts clickhouse-server).
func findBinary(names ...string) (string, error) {
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		for _, dir := range binaryDirs {
			p := filepath.Join(dir, name)
			if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("devenv: %s: %w", strings.Join(names, " or "), ErrBinaryNotFound)
}

// logOffsets records the current sizes of p.logs, so that a start-up
// error quotes only what this attempt wrote.
func (p *Process) logOffsets() []int64 {
	offs := make([]int64, len(p.logs))
	for i, path := range p.logs {
		if st, err := os.Stat(path); err == nil {
			offs[i] = st.Size()
		}
	}
	return offs
}

// readSince returns at most the last max bytes written to path after off.
func readSince(path string, off, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	if st.Size()-off > max {
		off = st.Size() - max
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(bytes.TrimSpace(b))
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func loggerOrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// repickAddr returns the repick function of startWithPorts for a server
// whose one address was picked (picked) rather than given: a new free port
// of the same host. nil when the address was given.
func (p *Process) repickAddr(picked bool) func() error {
	if !picked {
		return nil
	}
	return func() error {
		a, _, err := resolveAddr(net.JoinHostPort(hostOf(p.Addr), "0"))
		p.Addr = a
		return err
	}
}

// probeDial connects to addr for a readiness probe: the connection takes
// ctx's deadline, and ctx's end interrupts a read too (deadlines alone do
// not see a cancellation). The caller closes the connection and calls stop.
func probeDial(ctx context.Context, addr string) (conn net.Conn, stop func() bool, err error) {
	var d net.Dialer
	conn, err = d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	return conn, context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) }), nil
}

// startWithPorts runs p.launch with freshly picked ports until the server
// binds or the attempts run out. repick picks new ports; it is nil when the
// caller fixed the addresses.
func (p *Process) startWithPorts(ctx context.Context, repick func() error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var err error
	for attempt := 1; attempt <= maxBindAttempts; attempt++ {
		var c *child
		c, err = p.launch(ctx)
		if err == nil {
			p.cur = c
			return nil
		}
		if !errors.Is(err, errAddrInUse) || repick == nil || ctx.Err() != nil || attempt == maxBindAttempts {
			return err
		}
		p.logger.Warn("devenv: port taken, retrying with another", "name", p.Name, "addr", p.Addr, "attempt", attempt)
		if rerr := repick(); rerr != nil {
			return rerr
		}
	}
	return err
}

// startError builds the error for a failed start: it quotes what the
// server logged during this attempt and marks bind failures with
// errAddrInUse so the caller can retry on another port.
func (p *Process) startError(cause error, offs []int64) error {
	var text strings.Builder
	for i, path := range p.logs {
		if t := readSince(path, offs[i], 2000); t != "" {
			fmt.Fprintf(&text, "\n--- %s ---\n%s", path, t)
		}
	}
	msg := text.String()
	if strings.Contains(strings.ToLower(msg), "address already in use") {
		return fmt.Errorf("devenv: start %s on %s: %w: %w%s", p.Name, p.Addr, errAddrInUse, cause, msg)
	}
	return fmt.Errorf("devenv: start %s on %s: %w%s", p.Name, p.Addr, cause, msg)
}
