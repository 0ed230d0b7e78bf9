package devenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ZooKeeperOptions configures StartZooKeeper.
type ZooKeeperOptions struct {
	// Dir holds zoo.cfg (rewritten at every start), data/ (kept across
	// starts) and the log. Required; created if missing.
	Dir string
	// Addr is the client listen address. Default "127.0.0.1:0": a free
	// port chosen by us.
	Addr string
	// Jar is the ZooKeeper server jar; its manifest names the jars it
	// needs. Default /usr/share/java/zookeeper.jar (Debian's zookeeper
	// package).
	Jar string
	// Java is the JVM. Default: java on PATH or in the usual directories.
	Java string
	// StartTimeout bounds the wait for the server to serve. Default 60 s.
	StartTimeout time.Duration
	// Logger receives start/stop events. Default: discard.
	Logger *slog.Logger
}

// StartZooKeeper starts a standalone ZooKeeper server (what replicated
// ClickHouse tables and ON CLUSTER DDL need) as a child process and returns
// once it serves requests. Only the client port is opened, on loopback; no
// admin server.
func StartZooKeeper(ctx context.Context, opts ZooKeeperOptions) (*Process, error) {
	if opts.Dir == "" {
		return nil, errors.New("devenv: ZooKeeperOptions.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("devenv: zookeeper dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, fmt.Errorf("devenv: zookeeper dir: %w", err)
	}
	jar := orDefault(opts.Jar, "/usr/share/java/zookeeper.jar")
	if _, err := os.Stat(jar); err != nil {
		return nil, fmt.Errorf("devenv: zookeeper jar %s (apt package zookeeper): %w", jar, ErrBinaryNotFound)
	}
	java, err := binaryOrFind(opts.Java, "java")
	if err != nil {
		return nil, err
	}
	addr, picked, err := resolveAddr(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("devenv: zookeeper: %w", err)
	}
	timeout := orDefault(opts.StartTimeout, 60*time.Second)
	p := &Process{
		Name:    "zookeeper",
		Addr:    addr,
		Dir:     dir,
		LogPath: filepath.Join(dir, "zookeeper.log"),
		logger:  loggerOrDiscard(opts.Logger),
	}
	p.logs = []string{p.LogPath}
	cfgPath := filepath.Join(dir, "zoo.cfg")
	p.launch = func(ctx context.Context) (*child, error) {
		host, port, _ := net.SplitHostPort(p.Addr)
		// A short tick: sessions of servers that were killed expire fast.
		cfg := "tickTime=500\ninitLimit=10\nsyncLimit=5\n" +
			"dataDir=" + filepath.Join(dir, "data") + "\n" +
			"clientPort=" + port + "\nclientPortAddress=" + host + "\n" +
			"admin.enableServer=false\n4lw.commands.whitelist=srvr\n"
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			return nil, fmt.Errorf("devenv: zookeeper config: %w", err)
		}
		if err := checkFree(p.Addr); err != nil {
			return nil, fmt.Errorf("devenv: start zookeeper: %w", err)
		}
		offs := p.logOffsets()
		begin := time.Now()
		c, err := spawn(java, []string{"-Xmx256m", "-cp", jar, "org.apache.zookeeper.server.ZooKeeperServerMain", cfgPath}, dir, p.LogPath)
		if err != nil {
			return nil, fmt.Errorf("devenv: zookeeper: %w", err)
		}
		if err := waitReady(ctx, c, timeout, func(ctx context.Context) error { return zooKeeperOK(ctx, p.Addr) }); err != nil {
			return nil, p.startError(err, offs)
		}
		p.logger.Info("devenv: started", "name", p.Name, "addr", p.Addr, "pid", c.cmd.Process.Pid,
			"dir", dir, "took", time.Since(begin).Round(time.Millisecond))
		return c, nil
	}
	if err := p.startWithPorts(ctx, p.repickAddr(picked)); err != nil {
		return nil, err
	}
	return p, nil
}

// zooKeeperOK sends the four-letter word srvr and expects the server's
// mode. ruok answers imok before the server serves sessions: a ClickHouse
// 18.16 connecting then has its handshake cut and dies (its DDLWorker
// does not survive a failed first connect).
func zooKeeperOK(ctx context.Context, addr string) error {
	conn, stop, err := probeDial(ctx, addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer stop()
	if _, err := conn.Write([]byte("srvr")); err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(conn, 4096))
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), "\nMode: ") {
		return fmt.Errorf("srvr answered %q", strings.TrimSpace(string(b)))
	}
	return nil
}
