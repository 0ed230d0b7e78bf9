package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisClusterOptions configures StartRedisCluster.
type RedisClusterOptions struct {
	// Dir holds one data directory per node (node0, node1, …). Required;
	// created if missing.
	Dir string
	// Masters is the number of masters, which share the 16384 slots.
	// Default 3, the least redis-cli accepts.
	Masters int
	// Replicas is the number of replicas of each master. Default 1; -1
	// for none.
	Replicas int
	// NodeTimeout is cluster-node-timeout: how long a master may not
	// answer before it is failed and one of its replicas is promoted.
	// Default 1 s (a failover then takes 2.5–3 s on a 2-core VM); Redis's
	// own default is 15 s.
	NodeTimeout time.Duration
	// Binary is the redis-server to run, CLI the redis-cli that creates the
	// cluster. Default: found as for RedisOptions.Binary.
	Binary, CLI string
	// StartTimeout bounds the whole start, until every node reports the
	// cluster ok. Default 60 s.
	StartTimeout time.Duration
	// Logger receives start/stop events. Default: discard.
	Logger *slog.Logger
}

// RedisCluster is a Redis Cluster of child processes on loopback.
type RedisCluster struct {
	// Nodes are the servers in creation order; which of them are masters
	// changes with failovers (see Master).
	Nodes []*Process

	ids    []string // CLUSTER MYID of each node
	logger *slog.Logger
}

// StartRedisCluster starts Masters×(1+Replicas) non-persistent redis-server
// processes in cluster mode on free loopback ports, joins them with
// `redis-cli --cluster create`, and returns once every node reports
// cluster_state:ok and every replica is in sync with its master.
func StartRedisCluster(ctx context.Context, opts RedisClusterOptions) (*RedisCluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("devenv: RedisClusterOptions.Dir is required")
	}
	masters := orDefault(opts.Masters, 3)
	replicas := orDefault(opts.Replicas, 1)
	if replicas < 0 {
		replicas = 0
	}
	nodeTimeout := orDefault(opts.NodeTimeout, time.Second)
	cli, err := binaryOrFind(opts.CLI, "redis-cli")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, orDefault(opts.StartTimeout, 60*time.Second))
	defer cancel()
	begin := time.Now()
	c := &RedisCluster{logger: loggerOrDiscard(opts.Logger)}
	fail := func(err error) (*RedisCluster, error) {
		return nil, errors.Join(err, c.Stop())
	}
	for i := range masters * (1 + replicas) {
		// The cluster bus gets a port of its own (not port+10000, which may
		// be taken or beyond 65535).
		bus, err := freePort("127.0.0.1")
		if err != nil {
			return fail(fmt.Errorf("devenv: redis cluster: %w", err))
		}
		p, err := StartRedis(ctx, RedisOptions{
			Dir:    filepath.Join(opts.Dir, "node"+strconv.Itoa(i)),
			Binary: opts.Binary,
			Logger: opts.Logger,
			ExtraArgs: []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", "nodes.conf",
				"--cluster-port", strconv.Itoa(bus),
				"--cluster-node-timeout", strconv.FormatInt(nodeTimeout.Milliseconds(), 10),
				// A replica may take over however long its link was down.
				"--cluster-replica-validity-factor", "0",
				// The other masters keep serving their slots while one has
				// none (default: every node answers CLUSTERDOWN until a
				// replica took over).
				"--cluster-require-full-coverage", "no",
				// Replicas sync at once (default: the master waits 5 s for
				// more replicas to share the transfer).
				"--repl-diskless-sync-delay", "0",
			},
		})
		if err != nil {
			return fail(err)
		}
		p.Name = "redis-cluster-" + strconv.Itoa(i)
		c.Nodes = append(c.Nodes, p)
	}
	for _, p := range c.Nodes {
		id, err := nodeDo(ctx, p.Addr, "CLUSTER", "MYID").Text()
		if err != nil {
			return fail(fmt.Errorf("devenv: redis cluster: %s: CLUSTER MYID: %w", p.Addr, err))
		}
		c.ids = append(c.ids, id)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("devenv: redis-cli --cluster create: %w\n%s", err, out))
	}
	if err := c.WaitHealthy(ctx); err != nil {
		return fail(err)
	}
	c.logger.Info("devenv: started", "name", "redis-cluster", "masters", masters, "replicas", replicas,
		"addrs", c.Addrs(), "took", time.Since(begin).Round(time.Millisecond))
	return c, nil
}

// Addrs returns the address of every node, the seeds a client needs.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, p := range c.Nodes {
		addrs[i] = p.Addr
	}
	return addrs
}

// Stop stops every node.
func (c *RedisCluster) Stop() error {
	var errs []error
	for _, p := range c.Nodes {
		errs = append(errs, p.Stop())
	}
	return errors.Join(errs...)
}

// Master returns the node that is the master of key's slot now, as a live
// node's CLUSTER NODES says.
func (c *RedisCluster) Master(ctx context.Context, key string) (*Process, error) {
	live := c.live()
	if len(live) == 0 {
		return nil, errors.New("devenv: redis cluster: no node runs")
	}
	slot, err := nodeDo(ctx, live[0].Addr, "CLUSTER", "KEYSLOT", key).Int()
	if err != nil {
		return nil, fmt.Errorf("devenv: redis cluster: CLUSTER KEYSLOT: %w", err)
	}
	nodes, err := c.nodes(ctx, live[0].Addr)
	if err != nil {
		return nil, err
	}
	for _, n := range nodes {
		if n.master && !n.failed && n.serves(slot) {
			return c.byID(n.id), nil
		}
	}
	return nil, fmt.Errorf("devenv: redis cluster: no master serves slot %d", slot)
}

// FailMaster kills (SIGKILL) the master of key's slot and waits until one
// of its replicas has taken over the slot and the cluster is healthy again
// on every live node. It returns the killed and the promoted node.
func (c *RedisCluster) FailMaster(ctx context.Context, key string) (killed, promoted *Process, err error) {
	killed, err = c.Master(ctx, key)
	if err != nil {
		return nil, nil, err
	}
	slot, err := nodeDo(ctx, killed.Addr, "CLUSTER", "KEYSLOT", key).Int()
	if err != nil {
		return nil, nil, fmt.Errorf("devenv: redis cluster: CLUSTER KEYSLOT: %w", err)
	}
	// The master learns of its replicas by gossip: right after the cluster
	// was created its view may not list them yet.
	killedID := c.ids[slices.Index(c.Nodes, killed)]
	var replicas []*Process
	if err := poll(ctx, func() error {
		nodes, err := c.nodes(ctx, killed.Addr)
		if err != nil {
			return err
		}
		replicas = replicas[:0]
		for _, n := range nodes {
			if n.masterID == killedID {
				replicas = append(replicas, c.byID(n.id))
			}
		}
		if len(replicas) == 0 {
			return fmt.Errorf("master %s has no replica to fail over to", killed.Addr)
		}
		return nil
	}); err != nil {
		return nil, nil, fmt.Errorf("devenv: redis cluster: %w", err)
	}
	if err := killed.Kill(); err != nil {
		return nil, nil, err
	}
	c.logger.Info("devenv: killed redis cluster master", "addr", killed.Addr, "slot", slot)
	err = poll(ctx, func() error {
		promoted = nil
		for _, p := range replicas {
			nodes, err := c.nodes(ctx, p.Addr)
			if err != nil {
				return err
			}
			for _, n := range nodes {
				if n.myself && n.master && n.serves(slot) {
					promoted = p
				}
			}
		}
		if promoted == nil {
			return fmt.Errorf("no replica of %s serves slot %d yet", killed.Addr, slot)
		}
		return c.healthy(ctx)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("devenv: redis cluster: failover of %s: %w", killed.Addr, err)
	}
	c.logger.Info("devenv: redis cluster failed over", "killed", killed.Addr, "promoted", promoted.Addr)
	return killed, promoted, nil
}

// WaitReplicated waits until every replica has every write its master had
// taken when WaitReplicated was called (as INFO replication's offsets say),
// so that a test can kill a master without losing what it wrote before.
func (c *RedisCluster) WaitReplicated(ctx context.Context) error {
	for _, p := range c.live() {
		info, err := nodeDo(ctx, p.Addr, "INFO", "replication").Text()
		if err != nil {
			return fmt.Errorf("devenv: redis cluster: %s: %w", p.Addr, err)
		}
		if !strings.Contains(info, "role:master") {
			continue
		}
		target := infoInt(info, "master_repl_offset")
		err = poll(ctx, func() error {
			info, err := nodeDo(ctx, p.Addr, "INFO", "replication").Text()
			if err != nil {
				return err
			}
			seen := int64(0)
			for line := range strings.Lines(info) {
				// slave0:ip=127.0.0.1,port=37839,state=online,offset=1234,lag=0
				if !strings.HasPrefix(line, "slave") || !strings.Contains(line, ":ip=") {
					continue
				}
				seen++
				_, rest, _ := strings.Cut(line, "offset=")
				off, _, _ := strings.Cut(rest, ",")
				if n, err := strconv.ParseInt(off, 10, 64); err != nil || n < target {
					return fmt.Errorf("%s: a replica is at offset %s of %d", p.Addr, off, target)
				}
			}
			if want := infoInt(info, "connected_slaves"); seen != want {
				return fmt.Errorf("%s: %d of %d replicas listed", p.Addr, seen, want)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("devenv: redis cluster: replication: %w", err)
		}
	}
	return nil
}

// infoInt reads an integer field of an INFO reply (0 if absent).
func infoInt(info, field string) int64 {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// WaitHealthy waits until every live node reports cluster_state:ok with
// all slots served, and every live replica's link to its master is up.
func (c *RedisCluster) WaitHealthy(ctx context.Context) error {
	if err := poll(ctx, func() error { return c.healthy(ctx) }); err != nil {
		return fmt.Errorf("devenv: redis cluster not healthy: %w", err)
	}
	return nil
}

func (c *RedisCluster) healthy(ctx context.Context) error {
	for _, p := range c.live() {
		info, err := nodeDo(ctx, p.Addr, "CLUSTER", "INFO").Text()
		if err != nil {
			return fmt.Errorf("%s: %w", p.Addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
			return fmt.Errorf("%s: cluster not ok yet", p.Addr)
		}
		repl, err := nodeDo(ctx, p.Addr, "INFO", "replication").Text()
		if err != nil {
			return fmt.Errorf("%s: %w", p.Addr, err)
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("%s: replica not in sync yet", p.Addr)
		}
	}
	return nil
}

// live returns the nodes that run.
func (c *RedisCluster) live() []*Process {
	var out []*Process
	for _, p := range c.Nodes {
		if p.PID() != 0 {
			out = append(out, p)
		}
	}
	return out
}

func (c *RedisCluster) byID(id string) *Process {
	if i := slices.Index(c.ids, id); i >= 0 {
		return c.Nodes[i]
	}
	return nil
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	id             string
	myself, master bool
	failed         bool   // flagged fail (not only fail?, a suspicion)
	masterID       string // of a replica; "" for a master
	slots          [][2]int
}

func (n clusterNode) serves(slot int) bool {
	for _, r := range n.slots {
		if slot >= r[0] && slot <= r[1] {
			return true
		}
	}
	return false
}

// nodes parses CLUSTER NODES as addr sees it.
func (c *RedisCluster) nodes(ctx context.Context, addr string) ([]clusterNode, error) {
	text, err := nodeDo(ctx, addr, "CLUSTER", "NODES").Text()
	if err != nil {
		return nil, fmt.Errorf("%s: CLUSTER NODES: %w", addr, err)
	}
	var out []clusterNode
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		flags := strings.Split(f[2], ",")
		n := clusterNode{
			id:     f[0],
			myself: slices.Contains(flags, "myself"),
			master: slices.Contains(flags, "master"),
			failed: slices.Contains(flags, "fail"),
		}
		if f[3] != "-" {
			n.masterID = f[3]
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated
			}
			lo, hi, _ := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(orDefault(hi, lo))
			if err1 == nil && err2 == nil {
				n.slots = append(n.slots, [2]int{a, b})
			}
		}
		out = append(out, n)
	}
	return out, nil
}

// nodeDo runs one command on one node over a short-lived connection.
func nodeDo(ctx context.Context, addr string, args ...any) *redis.Cmd {
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	defer rdb.Close()
	return rdb.Do(ctx, args...)
}

// poll calls check every 100 ms until it returns nil or ctx ends; the
// error is then the last one check returned.
func poll(ctx context.Context, check func() error) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}
