package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Store shares the rollout between the replicas of the service: the
// replica that starts, advances, promotes or rolls back a rollout stores
// the new Status, and every other replica's Controller applies it on its
// next check (Options.CheckInterval), loading the candidate from the
// registry and serving it to the same share. Changes are compare-and-swap
// on a generation, so two replicas ending the same phase at once make one
// change, not two.
type Store interface {
	// Load returns the stored status and its generation; ok is false (and
	// gen 0) when no rollout was ever stored.
	Load(ctx context.Context) (st Status, gen uint64, ok bool, err error)
	// Swap stores st as generation gen+1 if the stored generation is still
	// gen, and tells whether it did.
	Swap(ctx context.Context, gen uint64, st Status) (bool, error)
}

// RedisStore is a Store in one Redis hash, rollout:{<model name>}, with
// fields gen and status (JSON).
type RedisStore struct {
	rdb redis.UniversalClient
	key string
}

// NewRedisStore returns the store of model name's rollouts.
func NewRedisStore(rdb redis.UniversalClient, name string) *RedisStore {
	return &RedisStore{rdb: rdb, key: "rollout:{" + name + "}"}
}

// swapScript sets status and increments gen only if gen is still ARGV[1].
var swapScript = redis.NewScript(`
local gen = tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')
if gen ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'gen', gen + 1, 'status', ARGV[2])
return 1`)

// Load implements Store.
func (s *RedisStore) Load(ctx context.Context) (Status, uint64, bool, error) {
	vals, err := s.rdb.HMGet(ctx, s.key, "gen", "status").Result()
	if err != nil {
		return Status{}, 0, false, fmt.Errorf("rollout: load shared state: %w", err)
	}
	g, _ := vals[0].(string)
	raw, _ := vals[1].(string)
	if g == "" || raw == "" {
		return Status{}, 0, false, nil
	}
	gen, err := strconv.ParseUint(g, 10, 64)
	if err != nil {
		return Status{}, 0, false, fmt.Errorf("rollout: shared state %s: generation %q: %w", s.key, g, err)
	}
	var st Status
	if err := json.Unmarshal([]byte(raw), &st); err != nil {
		return Status{}, 0, false, fmt.Errorf("rollout: shared state %s: %w", s.key, err)
	}
	return st, gen, true, nil
}

// Swap implements Store.
func (s *RedisStore) Swap(ctx context.Context, gen uint64, st Status) (bool, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return false, fmt.Errorf("rollout: encode shared state: %w", err)
	}
	n, err := swapScript.Run(ctx, s.rdb, []string{s.key}, gen, raw).Int()
	if err != nil {
		return false, fmt.Errorf("rollout: store shared state: %w", err)
	}
	return n == 1, nil
}

// errChanged is returned by publishLocked when another replica changed
// the rollout first.
var errChanged = errors.New("another replica changed the rollout first")

// publishLocked makes next the rollout's state: stored for every replica
// when there is a Store (refused with ErrConflict when another replica
// changed it since this one last synced), then kept here.
func (c *Controller) publishLocked(ctx context.Context, next Status) error {
	if c.opts.Store != nil {
		ok, err := c.opts.Store.Swap(ctx, c.gen, next)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %w; check the state and retry", ErrConflict, errChanged)
		}
		c.gen++
	}
	c.cur = &next
	c.exportPhase()
	return nil
}

// Sync applies the rollout another replica stored: it loads and serves
// the candidate at the stored share, follows a promotion, or returns the
// traffic to the stable version after a rollback. Run calls it before
// every check; without a Store it does nothing.
func (c *Controller) Sync(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.syncLocked(ctx)
}

func (c *Controller) syncLocked(ctx context.Context) error {
	if c.opts.Store == nil {
		return nil
	}
	st, gen, ok, err := c.opts.Store.Load(ctx)
	if err != nil || !ok || gen == c.gen {
		return err
	}
	switch st.State {
	case StateRunning:
		if c.candModel == nil || c.candModel.Version != st.Candidate {
			e, err := c.reg.Get(ctx, c.opts.Name, st.Candidate)
			if err != nil {
				return fmt.Errorf("rollout of %s started by another replica: %w", st.Candidate, err)
			}
			m, err := c.load(ctx, e)
			if err != nil {
				return fmt.Errorf("rollout of %s started by another replica: %w", st.Candidate, err)
			}
			c.candModel = m
			c.resetStats(st.Candidate, st.Stable, true)
		} else if c.cur == nil || c.cur.Phase != st.Phase {
			c.resetStats(st.Candidate, st.Stable, false)
		}
		if old := c.fc.SetCandidate(c.candModel, st.Percent, st.Shadow); old != nil && old != c.candModel {
			closeLater(old)
		}
		if n := len(st.History); n > 0 {
			c.phaseAt = st.History[n-1].StartedAt
		}
	case StatePromoted:
		if cur := c.fc.Model(); cur == nil || cur.Version != st.Candidate {
			m := c.candModel
			if m == nil || m.Version != st.Candidate {
				e, err := c.reg.Get(ctx, c.opts.Name, st.Candidate)
				if err == nil {
					m, err = c.load(ctx, e)
				}
				if err != nil {
					return fmt.Errorf("promotion of %s by another replica: %w", st.Candidate, err)
				}
			}
			if old := c.fc.SetModel(m); old != nil {
				closeLater(old)
			}
		}
		c.fc.ClearCandidate()
		c.candModel = nil
	case StateRolledBack:
		if old := c.fc.ClearCandidate(); old != nil {
			closeLater(old)
		}
		c.candModel = nil
	}
	if st.State != StateRunning {
		c.statsMu.Lock()
		c.cand, c.stable = nil, nil
		c.statsMu.Unlock()
	}
	if st.State != StateRunning && c.cur != nil && c.cur.State == StateRunning {
		c.opts.Logger.Info("rollout finished by another replica", "candidate", st.Candidate, "state", st.State, "reason", st.Reason)
	}
	c.cur, c.gen = &st, gen
	c.exportPhase()
	return nil
}
