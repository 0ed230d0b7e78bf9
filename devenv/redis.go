package devenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// RedisOptions configures StartRedis.
type RedisOptions struct {
	// Dir is the data directory (RDB/AOF files and redis.log). Required;
	// created if missing.
	Dir string
	// Addr is the listen address. Default "127.0.0.1:0": a free port
	// chosen by us (retried if the server then fails to bind it).
	Addr string
	// Persist turns on the append-only file (fsync every second) and RDB
	// snapshots, so that a second run on Dir finds its data. Default off:
	// nothing is written, a restart starts empty.
	Persist bool
	// Binary is the redis-server to run. Default: redis-server on PATH,
	// then in /usr/sbin, /usr/bin, /usr/local/sbin, /usr/local/bin.
	Binary string
	// StartTimeout bounds the wait for the first PONG. Default 20 s.
	StartTimeout time.Duration
	// Logger receives start/stop events. Default: discard.
	Logger *slog.Logger
	// ExtraArgs are appended to the redis-server command line (for
	// example StartRedisCluster's cluster settings). Default none.
	ExtraArgs []string
}

// StartRedis starts redis-server as a child process and returns once it
// answers PING.
func StartRedis(ctx context.Context, opts RedisOptions) (*Process, error) {
	if opts.Dir == "" {
		return nil, errors.New("devenv: RedisOptions.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("devenv: redis dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("devenv: redis dir: %w", err)
	}
	bin, err := binaryOrFind(opts.Binary, "redis-server")
	if err != nil {
		return nil, err
	}
	addr, picked, err := resolveAddr(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("devenv: redis: %w", err)
	}
	timeout := orDefault(opts.StartTimeout, 20*time.Second)
	p := &Process{
		Name:    "redis",
		Addr:    addr,
		Dir:     dir,
		LogPath: filepath.Join(dir, "redis.log"),
		logger:  loggerOrDiscard(opts.Logger),
	}
	p.logs = []string{p.LogPath}
	p.launch = func(ctx context.Context) (*child, error) {
		host, port, _ := net.SplitHostPort(p.Addr)
		args := []string{
			"--bind", host,
			"--port", port,
			"--dir", dir,
			"--daemonize", "no",
			"--supervised", "no",
			"--logfile", "", // stdout, i.e. redis.log
			"--loglevel", "notice",
			"--always-show-logo", "no",
			"--dbfilename", "dump.rdb",
		}
		if opts.Persist {
			args = append(args, "--appendonly", "yes", "--appendfsync", "everysec",
				"--save", "3600 1 300 100 60 10000")
		} else {
			args = append(args, "--appendonly", "no", "--save", "")
		}
		args = append(args, opts.ExtraArgs...)
		if err := checkFree(p.Addr); err != nil {
			return nil, fmt.Errorf("devenv: start redis: %w", err)
		}
		offs := p.logOffsets()
		begin := time.Now()
		c, err := spawn(bin, args, dir, p.LogPath)
		if err != nil {
			return nil, fmt.Errorf("devenv: redis: %w", err)
		}
		if err := waitReady(ctx, c, timeout, func(ctx context.Context) error { return redisPing(ctx, p.Addr) }); err != nil {
			return nil, p.startError(err, offs)
		}
		p.logger.Info("devenv: started", "name", p.Name, "addr", p.Addr, "pid", c.cmd.Process.Pid,
			"dir", dir, "persist", opts.Persist, "took", time.Since(begin).Round(time.Millisecond))
		return c, nil
	}
	if err := p.startWithPorts(ctx, p.repickAddr(picked)); err != nil {
		return nil, err
	}
	return p, nil
}

// redisPing sends an inline PING and expects +PONG (a server still loading
// its AOF answers -LOADING, which counts as not ready).
func redisPing(ctx context.Context, addr string) error {
	conn, stop, err := probeDial(ctx, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer stop()
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line = strings.TrimSpace(line); line != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil || h == "" {
		return "127.0.0.1"
	}
	return h
}
