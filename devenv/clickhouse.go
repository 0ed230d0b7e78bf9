package devenv

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// ClickHouseOptions configures StartClickHouse.
type ClickHouseOptions struct {
	// Dir holds everything of this server: config.xml and users.xml
	// (rewritten at every start), data/ (databases, kept across starts),
	// log/ and the stdout log. Required; created if missing.
	Dir string
	// TCPAddr is the native-protocol listen address (what clickhouse-go
	// uses). Default "127.0.0.1:0": a free port chosen by us.
	TCPAddr string
	// HTTPAddr is the HTTP listen address (/ping). Default "127.0.0.1:0".
	HTTPAddr string
	// LogLevel is the server's own log level (trace, debug, information,
	// warning, error). Default "information".
	LogLevel string
	// Binary is the server to run: a clickhouse-server, or a single
	// clickhouse binary (run as "clickhouse server"). Default:
	// clickhouse-server, then clickhouse, on PATH or in /usr/sbin, /usr/bin,
	// /usr/local/sbin, /usr/local/bin.
	Binary string
	// StartTimeout bounds the wait for /ping and a native connect.
	// Default 60 s.
	StartTimeout time.Duration
	// Logger receives start/stop events. Default: discard.
	Logger *slog.Logger
	// Cluster, when set, makes this server one replica of a cluster.
	// Default nil: a lone server without ZooKeeper.
	Cluster *ClickHouseCluster
}

// ClickHouseCluster is the part of the config that makes a server a member
// of a replicated cluster: the remote_servers entry, the ZooKeeper, the
// {shard} and {replica} macros and the interserver port replicas fetch
// parts from.
type ClickHouseCluster struct {
	// Name is the remote_servers entry (what ON CLUSTER names). Required.
	Name string
	// ZooKeeper is the host:port of the ZooKeeper. Required.
	ZooKeeper string
	// Shards lists the native addresses of every shard's replicas. The
	// server's own TCPAddr, which must then be given, must be one of them:
	// its position sets the macros, shard "<i>" and replica "r<j>" (from 1).
	// Shards use internal_replication: a Distributed insert writes one
	// replica, and replication copies the part.
	Shards [][]string
}

var clusterNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// macros returns the shard and replica of addr.
func (c *ClickHouseCluster) macros(addr string) (shard, replica string, err error) {
	for i, s := range c.Shards {
		for j, a := range s {
			if a == addr {
				return fmt.Sprint(i + 1), fmt.Sprintf("r%d", j+1), nil
			}
		}
	}
	return "", "", fmt.Errorf("devenv: clickhouse %s is in no shard of cluster %s", addr, c.Name)
}

// StartClickHouse writes a self-contained config into opts.Dir, starts
// clickhouse-server as a child process and returns once it answers /ping
// and a native-protocol connection. The returned Process's Addr is the
// native address, HTTPAddr the HTTP one; the user is "default" without
// password, reachable from loopback only.
func StartClickHouse(ctx context.Context, opts ClickHouseOptions) (*Process, error) {
	if opts.Dir == "" {
		return nil, errors.New("devenv: ClickHouseOptions.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("devenv: clickhouse dir: %w", err)
	}
	for _, sub := range []string{"", "data", "log"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("devenv: clickhouse dir: %w", err)
		}
	}
	bin, args, err := clickHouseBinary(opts.Binary)
	if err != nil {
		return nil, err
	}
	tcpAddr, tcpPicked, err := resolveAddr(opts.TCPAddr)
	if err != nil {
		return nil, fmt.Errorf("devenv: clickhouse tcp: %w", err)
	}
	httpAddr, httpPicked, err := resolveAddr(opts.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("devenv: clickhouse http: %w", err)
	}
	for httpPicked && httpAddr == tcpAddr { // two probes may get the same port
		if httpAddr, _, err = resolveAddr(net.JoinHostPort(hostOf(httpAddr), "0")); err != nil {
			return nil, fmt.Errorf("devenv: clickhouse http: %w", err)
		}
	}
	if hostOf(tcpAddr) != hostOf(httpAddr) {
		return nil, fmt.Errorf("devenv: clickhouse: TCPAddr %s and HTTPAddr %s must share a host (one listen_host)", tcpAddr, httpAddr)
	}
	var cluster *clusterConfig
	if c := opts.Cluster; c != nil {
		if tcpPicked || !clusterNameRE.MatchString(c.Name) || c.ZooKeeper == "" {
			return nil, errors.New("devenv: ClickHouseOptions.Cluster needs a Name (an identifier), ZooKeeper and an explicit TCPAddr")
		}
		cluster = &clusterConfig{ClickHouseCluster: c}
		if cluster.Shard, cluster.Replica, err = c.macros(tcpAddr); err != nil {
			return nil, err
		}
		if cluster.ZKHost, cluster.ZKPort, err = net.SplitHostPort(c.ZooKeeper); err != nil {
			return nil, fmt.Errorf("devenv: clickhouse zookeeper: %w", err)
		}
	}
	timeout := orDefault(opts.StartTimeout, 60*time.Second)
	logLevel := orDefault(opts.LogLevel, "information")
	p := &Process{
		Name:     "clickhouse",
		Addr:     tcpAddr,
		HTTPAddr: httpAddr,
		Dir:      dir,
		LogPath:  filepath.Join(dir, "log", "stdout.log"),
		logger:   loggerOrDiscard(opts.Logger),
	}
	errLog := filepath.Join(dir, "log", "clickhouse-server.err.log")
	p.logs = []string{p.LogPath, errLog}
	configPath := filepath.Join(dir, "config.xml")
	p.launch = func(ctx context.Context) (*child, error) {
		if err := checkFree(p.Addr, p.HTTPAddr); err != nil {
			return nil, fmt.Errorf("devenv: start clickhouse: %w", err)
		}
		if cluster != nil {
			// Only this server's own address in ZooKeeper: pick anew each start.
			port, err := freePort(hostOf(p.Addr))
			if err != nil {
				return nil, fmt.Errorf("devenv: clickhouse interserver: %w", err)
			}
			cluster.InterserverPort = port
		}
		if err := writeClickHouseConfig(dir, p.Addr, p.HTTPAddr, logLevel, cluster); err != nil {
			return nil, err
		}
		offs := p.logOffsets()
		begin := time.Now()
		c, err := spawn(bin, append(args, "--config-file="+configPath), dir, p.LogPath)
		if err != nil {
			return nil, fmt.Errorf("devenv: clickhouse: %w", err)
		}
		if err := waitReady(ctx, c, timeout, func(ctx context.Context) error { return clickHouseReady(ctx, p.Addr, p.HTTPAddr) }); err != nil {
			return nil, p.startError(err, offs)
		}
		p.logger.Info("devenv: started", "name", p.Name, "addr", p.Addr, "http", p.HTTPAddr,
			"pid", c.cmd.Process.Pid, "dir", dir, "took", time.Since(begin).Round(time.Millisecond))
		return c, nil
	}
	var repick func() error
	if tcpPicked || httpPicked {
		repick = func() error {
			if tcpPicked {
				a, _, err := resolveAddr(net.JoinHostPort(hostOf(p.Addr), "0"))
				if err != nil {
					return err
				}
				p.Addr = a
			}
			for httpPicked {
				a, _, err := resolveAddr(net.JoinHostPort(hostOf(p.HTTPAddr), "0"))
				if err != nil {
					return err
				}
				if a != p.Addr {
					p.HTTPAddr = a
					break
				}
			}
			return nil
		}
	}
	if err := p.startWithPorts(ctx, repick); err != nil {
		return nil, err
	}
	return p, nil
}

// clickHouseBinary finds the server: Debian's 18.16 ships a separate
// /usr/sbin/clickhouse-server; upstream packages ship one /usr/bin/clickhouse
// taking a "server" argument.
func clickHouseBinary(explicit string) (string, []string, error) {
	if explicit != "" {
		bin, err := binaryOrFind(explicit, "")
		if err != nil {
			return "", nil, err
		}
		if filepath.Base(bin) == "clickhouse" {
			return bin, []string{"server"}, nil
		}
		return bin, nil, nil
	}
	if bin, err := findBinary("clickhouse-server"); err == nil {
		return bin, nil, nil
	}
	if bin, err := findBinary("clickhouse"); err == nil {
		return bin, []string{"server"}, nil
	}
	return "", nil, fmt.Errorf("devenv: clickhouse-server or clickhouse: %w", ErrBinaryNotFound)
}

// pingClient keeps no idle connection: the server waits for open HTTP
// connections (keep_alive_timeout) before it exits on SIGTERM.
var pingClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// clickHouseReady checks /ping over HTTP, then a native-protocol
// handshake, which is what the service uses.
func clickHouseReady(ctx context.Context, tcpAddr, httpAddr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/ping", nil)
	if err != nil {
		return err
	}
	resp, err := pingClient.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "Ok." {
		return fmt.Errorf("/ping: %s %q", resp.Status, body)
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{tcpAddr},
		Auth:        clickhouse.Auth{Database: "default", Username: "default"},
		DialTimeout: 2 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("native open: %w", err)
	}
	defer conn.Close()
	if err := conn.Ping(ctx); err != nil {
		return fmt.Errorf("native ping: %w", err)
	}
	return nil
}

// clickHouseConfig is the whole server config. Notes for ClickHouse 18.16:
//   - listen_host 127.0.0.1 only: without it the server listens on every
//     interface; listen_try=0 makes a taken port fatal (exit code 70,
//     "Address already in use" in the error log) instead of a server
//     silently running without that port, so the start can retry.
//   - no interserver_http_port: the stock config opens 9009 for
//     replication, which we neither need nor want on a shared box. With
//     ClickHouseOptions.Cluster, a free loopback port, with zookeeper,
//     macros, remote_servers and distributed_ddl.
//   - every path (path, tmp_path, user_files_path, format_schema_path,
//     logs) points into Dir; defaults would land in /var/lib/clickhouse.
//   - timezone UTC, so DateTime text is the same on every machine.
//   - no query_log/part_log: no system tables written in the background.
//   - caches are allocated on demand: 256 MiB bounds fit a 2-core box.
//     background_pool_size stays at 16: with fewer threads than
//     number_of_free_entries_in_pool_to_lower_max_size_of_merge (8) the
//     merge size cap drops and parts pile up under inserts.
//   - max_table_size_to_drop=0 so dev/test DROPs never refuse big tables.
//   - users.xml: user "default", no password, loopback networks only.
//   - poll_interval=1 (default 10): a connection handler notices a
//     shutdown only between polls, so with the default an idle client
//     connection (every pool keeps some) holds SIGTERM up for 10 s.
var clickHouseConfig = template.Must(template.New("config").Funcs(template.FuncMap{
	"x":    xmlEscape,
	"host": hostOf,
	"port": func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p },
}).Parse(`<?xml version="1.0"?>
<!-- Written by devenv.StartClickHouse at every start: edits are overwritten. -->
<yandex>
    <logger>
        <level>{{x .LogLevel}}</level>
        <log>{{x .Dir}}/log/clickhouse-server.log</log>
        <errorlog>{{x .Dir}}/log/clickhouse-server.err.log</errorlog>
        <size>50M</size>
        <count>2</count>
    </logger>
    <listen_host>{{x .Host}}</listen_host>
    <listen_try>0</listen_try>
    <tcp_port>{{.TCPPort}}</tcp_port>
    <http_port>{{.HTTPPort}}</http_port>
    <path>{{x .Dir}}/data/</path>
    <tmp_path>{{x .Dir}}/data/tmp/</tmp_path>
    <user_files_path>{{x .Dir}}/data/user_files/</user_files_path>
    <format_schema_path>{{x .Dir}}/data/format_schemas/</format_schema_path>
    <users_config>{{x .Dir}}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <umask>022</umask>
    <mlock_executable>false</mlock_executable>
    <max_connections>1024</max_connections>
    <max_concurrent_queries>100</max_concurrent_queries>
    <keep_alive_timeout>3</keep_alive_timeout>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_table_size_to_drop>0</max_table_size_to_drop>
    <max_partition_size_to_drop>0</max_partition_size_to_drop>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
{{- with .Cluster}}
    <interserver_http_host>{{x $.Host}}</interserver_http_host>
    <interserver_http_port>{{.InterserverPort}}</interserver_http_port>
    <zookeeper>
        <node><host>{{x .ZKHost}}</host><port>{{.ZKPort}}</port></node>
        <session_timeout_ms>10000</session_timeout_ms>
    </zookeeper>
    <macros><shard>{{.Shard}}</shard><replica>{{.Replica}}</replica></macros>
    <remote_servers>
        <{{.Name}}>
{{- range .Shards}}
            <shard>
                <internal_replication>true</internal_replication>
{{- range .}}
                <replica><host>{{x (host .)}}</host><port>{{port .}}</port></replica>
{{- end}}
            </shard>
{{- end}}
        </{{.Name}}>
    </remote_servers>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
{{- end}}
</yandex>
`))

var clickHouseUsers = `<?xml version="1.0"?>
<!-- Written by devenv.StartClickHouse at every start: edits are overwritten. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <poll_interval>1</poll_interval>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
`

// clusterConfig is what the config template needs of a cluster member.
type clusterConfig struct {
	*ClickHouseCluster
	Shard, Replica  string
	ZKHost, ZKPort  string
	InterserverPort int
}

func writeClickHouseConfig(dir, tcpAddr, httpAddr, logLevel string, cluster *clusterConfig) error {
	host, tcpPort, err := net.SplitHostPort(tcpAddr)
	if err != nil {
		return fmt.Errorf("devenv: clickhouse config: %w", err)
	}
	_, httpPort, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return fmt.Errorf("devenv: clickhouse config: %w", err)
	}
	var buf bytes.Buffer
	if err := clickHouseConfig.Execute(&buf, map[string]any{
		"Dir": dir, "Host": host, "TCPPort": tcpPort, "HTTPPort": httpPort, "LogLevel": logLevel, "Cluster": cluster,
	}); err != nil {
		return fmt.Errorf("devenv: clickhouse config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("devenv: clickhouse config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "users.xml"), []byte(clickHouseUsers), 0o644); err != nil {
		return fmt.Errorf("devenv: clickhouse users: %w", err)
	}
	return nil
}

func xmlEscape(s string) (string, error) {
	var b strings.Builder
	if err := xml.EscapeText(&b, []byte(s)); err != nil {
		return "", err
	}
	return b.String(), nil
}
