package devenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func stopAtCleanup(t *testing.T, p *Process) {
	t.Helper()
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if pid := p.PID(); pid != 0 {
			t.Errorf("cleanup: pid %d still running after Stop", pid)
		}
	})
}

func TestRedisCrashAndRestart(t *testing.T) {
	tests := []struct {
		name    string
		persist bool
		down    func(*Process) error
		wantKey bool
	}{
		{name: "persist, kill -9", persist: true, down: (*Process).Kill, wantKey: true},
		{name: "persist, stop", persist: true, down: (*Process).Stop, wantKey: true},
		{name: "no persist, stop", persist: false, down: (*Process).Stop, wantKey: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			begin := time.Now()
			p, err := StartRedis(ctx, RedisOptions{Dir: t.TempDir(), Persist: tt.persist})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("redis started in %v on %s", time.Since(begin).Round(time.Millisecond), p.Addr)
			stopAtCleanup(t, p)
			addr := p.Addr

			rdb := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1, DialTimeout: time.Second})
			defer rdb.Close()
			if err := rdb.Ping(ctx).Err(); err != nil {
				t.Fatalf("PING: %v", err)
			}
			if err := rdb.Set(ctx, "survivor", "yes", 0).Err(); err != nil {
				t.Fatal(err)
			}

			if err := tt.down(p); err != nil {
				t.Fatal(err)
			}
			if err := tt.down(p); err != nil {
				t.Fatalf("second call is not a no-op: %v", err)
			}
			if p.PID() != 0 {
				t.Fatal("PID still set after the server went down")
			}
			if err := rdb.Ping(ctx).Err(); err == nil {
				t.Fatal("PING succeeded while the server is down")
			}

			begin = time.Now()
			if err := p.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			t.Logf("redis restarted in %v", time.Since(begin).Round(time.Millisecond))
			if p.Addr != addr {
				t.Fatalf("restart moved from %s to %s", addr, p.Addr)
			}
			if err := rdb.Ping(ctx).Err(); err != nil {
				t.Fatalf("PING after restart: %v", err)
			}
			n, err := rdb.Exists(ctx, "survivor").Result()
			if err != nil {
				t.Fatal(err)
			}
			if got := n == 1; got != tt.wantKey {
				t.Fatalf("key present after restart = %v, want %v", got, tt.wantKey)
			}
		})
	}
}

func TestRestartWaitsForTakenPortThenFails(t *testing.T) {
	ctx := testContext(t)
	p, err := StartRedis(ctx, RedisOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, p)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		t.Fatalf("take the port: %v", err)
	}
	err = p.Restart(ctx)
	ln.Close()
	if !errors.Is(err, errAddrInUse) {
		t.Fatalf("Restart on a taken port: got %v, want errAddrInUse", err)
	}
	if p.PID() != 0 {
		t.Fatal("a failed restart left a process")
	}
	if err := p.Restart(ctx); err != nil {
		t.Fatalf("Restart once the port is free: %v", err)
	}
}

func TestFixedAddressTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = StartRedis(testContext(t), RedisOptions{Dir: t.TempDir(), Addr: ln.Addr().String()})
	if !errors.Is(err, errAddrInUse) {
		t.Fatalf("got %v, want errAddrInUse", err)
	}
}

func TestMissingBinarySaysMakeDeps(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	saved := binaryDirs
	binaryDirs = nil
	t.Cleanup(func() { binaryDirs = saved })

	tests := []struct {
		name  string
		start func(context.Context, string) error
	}{
		{"redis", func(ctx context.Context, dir string) error {
			_, err := StartRedis(ctx, RedisOptions{Dir: dir})
			return err
		}},
		{"clickhouse", func(ctx context.Context, dir string) error {
			_, err := StartClickHouse(ctx, ClickHouseOptions{Dir: dir})
			return err
		}},
		{"explicit redis binary", func(ctx context.Context, dir string) error {
			_, err := StartRedis(ctx, RedisOptions{Dir: dir, Binary: filepath.Join(dir, "redis-server")})
			return err
		}},
		{"explicit clickhouse binary", func(ctx context.Context, dir string) error {
			_, err := StartClickHouse(ctx, ClickHouseOptions{Dir: dir, Binary: dir})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.start(testContext(t), t.TempDir())
			if !errors.Is(err, ErrBinaryNotFound) || !strings.Contains(err.Error(), "make deps") {
				t.Fatalf("got %v, want ErrBinaryNotFound mentioning make deps", err)
			}
		})
	}
}

func TestRequiredDir(t *testing.T) {
	ctx := testContext(t)
	if _, err := StartRedis(ctx, RedisOptions{}); err == nil {
		t.Error("StartRedis without Dir succeeded")
	}
	if _, err := StartClickHouse(ctx, ClickHouseOptions{}); err == nil {
		t.Error("StartClickHouse without Dir succeeded")
	}
	if _, err := StartKafka(ctx, KafkaOptions{}); err == nil {
		t.Error("StartKafka without Dir succeeded")
	}
}

func openClickHouse(t *testing.T, addr string) clickhouse.Conn {
	t.Helper()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestClickHouseKeepsDataAcrossStarts(t *testing.T) {
	tests := []struct {
		name string
		// again brings the server back on the same Dir and returns the
		// process serving now.
		again func(context.Context, *Process) (*Process, error)
	}{
		{"stop, start on the same dir", func(ctx context.Context, p *Process) (*Process, error) {
			if err := p.Stop(); err != nil {
				return nil, err
			}
			return StartClickHouse(ctx, ClickHouseOptions{Dir: p.Dir})
		}},
		{"kill -9, restart", func(ctx context.Context, p *Process) (*Process, error) {
			if err := p.Kill(); err != nil {
				return nil, err
			}
			return p, p.Restart(ctx)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t)
			dir := filepath.Join(t.TempDir(), "dir with space & <xml>")
			begin := time.Now()
			p, err := StartClickHouse(ctx, ClickHouseOptions{Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("clickhouse started in %v on %s (http %s)", time.Since(begin).Round(time.Millisecond), p.Addr, p.HTTPAddr)
			stopAtCleanup(t, p)

			conn := openClickHouse(t, p.Addr)
			var one uint8
			if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
				t.Fatalf("SELECT 1 = %d, %v", one, err)
			}
			var tz string
			// 18.16 reports the configured UTC under its alias Etc/UTC.
			if err := conn.QueryRow(ctx, "SELECT timezone()").Scan(&tz); err != nil || (tz != "UTC" && tz != "Etc/UTC") {
				t.Errorf("server timezone = %q, %v; want UTC", tz, err)
			}
			for _, q := range []string{
				"CREATE DATABASE keep",
				"CREATE TABLE keep.t (id UInt32, name String) ENGINE = MergeTree ORDER BY id",
			} {
				if err := conn.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			// 18.16 trap: Exec("INSERT ... VALUES ...") hangs (the server
			// waits for data blocks); insert with a batch and a column list.
			batch, err := conn.PrepareBatch(ctx, "INSERT INTO keep.t (id, name)")
			if err != nil {
				t.Fatal(err)
			}
			for i, name := range []string{"one", "two"} {
				if err := batch.Append(uint32(i+1), name); err != nil {
					t.Fatal(err)
				}
			}
			if err := batch.Send(); err != nil {
				t.Fatalf("insert: %v", err)
			}

			begin = time.Now()
			p2, err := tt.again(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("clickhouse back in %v", time.Since(begin).Round(time.Millisecond))
			if p2 != p {
				stopAtCleanup(t, p2)
			}
			conn2 := openClickHouse(t, p2.Addr)
			var n uint64
			if err := conn2.QueryRow(ctx, "SELECT count() FROM keep.t").Scan(&n); err != nil {
				t.Fatalf("table from the first run: %v", err)
			}
			if n != 2 {
				t.Fatalf("rows after restart = %d, want 2", n)
			}

			begin = time.Now()
			if err := p2.Stop(); err != nil {
				t.Fatal(err)
			}
			t.Logf("clickhouse stopped in %v", time.Since(begin).Round(time.Millisecond))
		})
	}
}

func TestClickHouseListensOnLoopbackOnly(t *testing.T) {
	ctx := testContext(t)
	p, err := StartClickHouse(ctx, ClickHouseOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	stopAtCleanup(t, p)
	out, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	// Every listening socket of the server: the two configured, on
	// 127.0.0.1 (0100007F), and nothing else (no interserver port).
	inodes := socketInodes(t, p.PID())
	var listening []string
	for _, line := range strings.Split(string(out), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] {
			continue
		}
		listening = append(listening, f[1])
	}
	want := map[string]bool{hexAddr(t, p.Addr): true, hexAddr(t, p.HTTPAddr): true}
	if len(listening) != len(want) {
		t.Fatalf("server listens on %v, want exactly %v", listening, want)
	}
	for _, l := range listening {
		if !want[l] {
			t.Errorf("unexpected listening socket %s", l)
		}
	}
}

func socketInodes(t *testing.T, pid int) map[string]bool {
	t.Helper()
	fds, err := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		target, err := os.Readlink(fd)
		if err == nil && strings.HasPrefix(target, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	return inodes
}

// hexAddr renders 127.0.0.1:port as /proc/net/tcp does.
func hexAddr(t *testing.T, addr string) string {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("address %q is not on 127.0.0.1", addr)
	}
	n, _ := strconv.Atoi(port)
	return fmt.Sprintf("0100007F:%04X", n)
}

func TestKafkaKeepsRecordsAcrossStarts(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	k, err := StartKafka(ctx, KafkaOptions{Dir: dir, Topics: []string{"user-events"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)

	w := &kafka.Writer{
		Addr:         kafka.TCP(k.Brokers...),
		Topic:        "user-events",
		Balancer:     kafka.BalancerFunc(func(_ kafka.Message, partitions ...int) int { return partitions[0] }),
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 2 * time.Millisecond,
	}
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("r1"), Value: []byte("hello")}); err != nil {
		t.Fatalf("produce: %v", err)
	}
	w.Close()
	if got := readFirst(t, ctx, k.Brokers, "user-events"); got != "hello" {
		t.Fatalf("consumed %q, want hello", got)
	}

	k.Stop()
	k.Stop() // idempotent

	// A second start on the same Dir, with one more topic.
	k2, err := StartKafka(ctx, KafkaOptions{Dir: dir, Topics: []string{"user-events", "supply-events"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k2.Stop)
	if got := readFirst(t, ctx, k2.Brokers, "user-events"); got != "hello" {
		t.Fatalf("after restart consumed %q, want hello", got)
	}
	if n := partitions(t, k2.Brokers[0], "supply-events"); n != 6 {
		t.Fatalf("supply-events has %d partitions, want the default 6", n)
	}

	addr := k2.Brokers[0]
	if err := k2.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if k2.Brokers[0] != addr {
		t.Fatalf("Restart moved from %s to %s", addr, k2.Brokers[0])
	}
	if got := readFirst(t, ctx, k2.Brokers, "user-events"); got != "hello" {
		t.Fatalf("after Restart consumed %q, want hello", got)
	}
}

func readFirst(t *testing.T, ctx context.Context, brokers []string, topic string) string {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 50 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatalf("consume %s: %v", topic, err)
	}
	return string(m.Value)
}

func partitions(t *testing.T, broker, topic string) int {
	t.Helper()
	conn, err := kafka.Dial("tcp", broker)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ps, err := conn.ReadPartitions(topic)
	if err != nil {
		t.Fatalf("partitions of %s: %v", topic, err)
	}
	return len(ps)
}

// TestChildDiesWithParent runs this test binary as a parent that starts
// Redis and is then killed with SIGKILL: the Redis child must follow.
func TestChildDiesWithParent(t *testing.T) {
	if dir := os.Getenv("DEVENV_HELPER_DIR"); dir != "" {
		p, err := StartRedis(context.Background(), RedisOptions{Dir: dir})
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println("PID", p.PID())
		time.Sleep(2 * time.Minute) // wait to be killed (a timer, not select{}, so no deadlock exit)
		os.Exit(1)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildDiesWithParent$", "-test.count=1")
	cmd.Env = append(os.Environ(), "DEVENV_HELPER_DIR="+t.TempDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	var line string
	for {
		var b [1]byte
		if _, err := stdout.Read(b[:]); err != nil {
			break
		}
		if b[0] != '\n' {
			line += string(b[:])
			continue
		}
		if _, err := fmt.Sscanf(line, "PID %d", &pid); err == nil {
			break
		}
		line = ""
	}
	if pid == 0 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("helper did not report a Redis pid (last line %q)", line)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("redis %d not running under the helper: %v", pid, err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("redis %d survived its parent", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStartRetriesPickedPortsOnlyOnBindFailure(t *testing.T) {
	tests := []struct {
		name        string
		failures    []error // what the first launches return
		canRepick   bool
		wantErr     error // nil = started
		wantLaunch  int
		wantRepicks int
	}{
		{name: "starts first time", canRepick: true, wantLaunch: 1},
		{name: "port taken twice, then free", failures: []error{errAddrInUse, errAddrInUse}, canRepick: true, wantLaunch: 3, wantRepicks: 2},
		{name: "port taken, address fixed", failures: []error{errAddrInUse}, canRepick: false, wantErr: errAddrInUse, wantLaunch: 1},
		{name: "other failure is not retried", failures: []error{os.ErrPermission}, canRepick: true, wantErr: os.ErrPermission, wantLaunch: 1},
		{name: "gives up after maxBindAttempts", failures: []error{errAddrInUse, errAddrInUse, errAddrInUse, errAddrInUse, errAddrInUse}, canRepick: true, wantErr: errAddrInUse, wantLaunch: maxBindAttempts, wantRepicks: maxBindAttempts - 1},
	}
	sleep, err := findBinary("sleep")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			launches, repicks := 0, 0
			p := &Process{Name: "fake", logger: loggerOrDiscard(nil)}
			p.launch = func(context.Context) (*child, error) {
				launches++
				if launches <= len(tt.failures) {
					return nil, fmt.Errorf("launch %d: %w", launches, tt.failures[launches-1])
				}
				return spawn(sleep, []string{"30"}, dir, filepath.Join(dir, "log"))
			}
			var repick func() error
			if tt.canRepick {
				repick = func() error { repicks++; return nil }
			}
			err := p.startWithPorts(testContext(t), repick)
			t.Cleanup(func() { _ = p.Kill() })
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if launches != tt.wantLaunch || repicks != tt.wantRepicks {
				t.Fatalf("launches %d repicks %d, want %d and %d", launches, repicks, tt.wantLaunch, tt.wantRepicks)
			}
			if (p.PID() != 0) != (tt.wantErr == nil) {
				t.Fatalf("running = %v after err %v", p.PID() != 0, err)
			}
		})
	}
}

// TestKafkaStopBroker: a stopped broker refuses connections, cuts the ones
// it had and leaves the metadata, its partitions led by the others; the
// controller and unknown nodes are refused; with fewer brokers left than a
// topic's min.insync.replicas, acks=all produces to it are refused (acks=1
// ones and other topics' are not); Restart brings every broker back on its
// address.
func TestKafkaStopBroker(t *testing.T) {
	ctx := testContext(t)
	k, err := StartKafka(ctx, KafkaOptions{Dir: t.TempDir(), NumBrokers: 3, Partitions: 4, Topics: []string{"t"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	if len(k.Brokers) != 3 {
		t.Fatalf("brokers %v, want 3", k.Brokers)
	}
	cl := &kafka.Client{Addr: kafka.TCP(k.Brokers...)}
	if _, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: "isr2", NumPartitions: 2, ReplicationFactor: 3,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "min.insync.replicas", ConfigValue: "2"}},
	}}}); err != nil {
		t.Fatal(err)
	}
	produce := func(topic string, acks kafka.RequiredAcks) error {
		w := &kafka.Writer{Addr: kafka.TCP(k.Brokers[2]), Topic: topic, RequiredAcks: acks, MaxAttempts: 1, BatchTimeout: time.Millisecond,
			Transport: &kafka.Transport{}} // fresh metadata
		defer w.Close()
		return w.WriteMessages(ctx, kafka.Message{Value: []byte("x")})
	}
	conn, err := kafka.DialContext(ctx, "tcp", k.Brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, node := range []int{2, 3, -1} {
		if err := k.StopBroker(ctx, node); err == nil {
			t.Errorf("StopBroker(%d) succeeded", node)
		}
	}
	if err := k.StopBroker(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ReadPartitions("t"); err == nil {
		t.Error("a connection to the stopped broker still answers")
	}
	if c, err := net.DialTimeout("tcp", k.Brokers[0], time.Second); err == nil {
		c.Close()
		t.Error("the stopped broker accepts connections")
	}
	leaders := func() (brokers int, led map[int]bool) {
		c, err := kafka.DialContext(ctx, "tcp", k.Brokers[2])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		bs, err := c.Brokers()
		if err != nil {
			t.Fatal(err)
		}
		ps, err := c.ReadPartitions("t")
		if err != nil {
			t.Fatal(err)
		}
		led = map[int]bool{}
		for _, p := range ps {
			led[p.Leader.ID] = true
		}
		return len(bs), led
	}
	if n, led := leaders(); n != 2 || led[0] {
		t.Errorf("after the stop: %d brokers in the metadata, leaders %v; want 2, none on node 0", n, led)
	}
	if err := produce("isr2", kafka.RequireAll); err != nil {
		t.Errorf("acks=all with 2 brokers left and min.insync.replicas=2: %v", err)
	}
	if err := k.StopBroker(ctx, 1); err != nil {
		t.Fatal(err)
	}
	var we kafka.WriteErrors
	if err := produce("isr2", kafka.RequireAll); !errors.As(err, &we) || !errors.Is(we[0], kafka.NotEnoughReplicas) {
		t.Errorf("acks=all with 1 broker left and min.insync.replicas=2: %v, want NOT_ENOUGH_REPLICAS", err)
	}
	if err := produce("isr2", kafka.RequireOne); err != nil {
		t.Errorf("acks=1 with 1 broker left: %v", err)
	}
	if err := produce("t", kafka.RequireAll); err != nil {
		t.Errorf("acks=all to a topic without min.insync.replicas: %v", err)
	}
	addrs := slices.Clone(k.Brokers)
	if err := k.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(k.Brokers, addrs) {
		t.Errorf("Restart moved the brokers from %v to %v", addrs, k.Brokers)
	}
	if n, _ := leaders(); n != 3 {
		t.Errorf("after Restart: %d brokers, want 3", n)
	}
	if err := produce("isr2", kafka.RequireAll); err != nil {
		t.Errorf("acks=all after Restart: %v", err)
	}
}

// TestRedisClusterFailover starts 3 masters and 3 replicas, writes a key to
// every master, kills the master of one and checks that its replica took
// over with the (replicated) key, and that the client writes to every slot
// again.
func TestRedisClusterFailover(t *testing.T) {
	ctx := testContext(t)
	begin := time.Now()
	c, err := StartRedisCluster(ctx, RedisClusterOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	t.Logf("cluster of %d nodes up in %s", len(c.Nodes), time.Since(begin).Round(time.Millisecond))
	if len(c.Nodes) != 6 {
		t.Fatalf("%d nodes, want 6", len(c.Nodes))
	}
	// A dead master answers nothing: the client finds its successor when it
	// reloads the slot map (go-redis's default: every 60 s).
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ClusterStateReloadInterval: time.Second})
	defer rdb.Close()
	keys := []string{"{a}", "{b}", "{c}", "{d}", "{e}", "{f}", "{g}", "{h}"}
	masters := map[*Process]bool{}
	for _, k := range keys {
		if err := rdb.Set(ctx, k, "v1", 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
		m, err := c.Master(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		masters[m] = true
	}
	if len(masters) != 3 {
		t.Fatalf("the keys are on %d masters, want 3 (the slots spread)", len(masters))
	}
	// The writes must be on the replicas before the master dies.
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}

	begin = time.Now()
	killed, promoted, err := c.FailMaster(ctx, "{a}")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("master %s killed, replica %s promoted in %s", killed.Addr, promoted.Addr, time.Since(begin).Round(time.Millisecond))
	if killed.PID() != 0 || promoted == killed {
		t.Fatalf("killed %s (pid %d), promoted %s", killed.Addr, killed.PID(), promoted.Addr)
	}
	if m, err := c.Master(ctx, "{a}"); err != nil || m != promoted {
		t.Fatalf("master of {a} is %v (%v), want %s", m, err, promoted.Addr)
	}
	node := redis.NewClient(&redis.Options{Addr: promoted.Addr})
	defer node.Close()
	if v, err := node.Get(ctx, "{a}").Result(); err != nil || v != "v1" {
		t.Fatalf("GET {a} on the promoted replica: %q %v", v, err)
	}
	// The client finds the new master by itself (MOVED, reloaded slots).
	for _, k := range keys {
		if err := rdb.Set(ctx, k, "v2", 0).Err(); err != nil {
			t.Fatalf("SET %s after the failover: %v", k, err)
		}
	}
}
