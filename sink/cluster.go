package sink

import (
	"context"
	"fmt"
)

// clusterTables are the replicated tables whose content the sink reads
// back on a cluster ("On a cluster" in the package doc): its resume points
// and the tables its lookups search.
var clusterTables = []string{"sink_offsets_local", "events_raw_local", "pricing_decisions_local", "experiment_exposures_local"}

// syncReplicas, on a cluster, waits until this server's replicas of
// clusterTables have every part that any replica acknowledged (SYSTEM SYNC
// REPLICA fetches the replication log from ZooKeeper first). A part only
// a dead server holds keeps it waiting (until ctx or the read timeout
// ends) rather than reading a position that server is ahead of. On a lone
// server it does nothing.
func (s *Sink) syncReplicas(ctx context.Context) error {
	var engine string
	if err := s.conn.QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = ? AND name = 'sink_offsets'", s.db).Scan(&engine); err != nil {
		return fmt.Errorf("look up sink_offsets: %w", err)
	}
	if engine != "Distributed" {
		return nil
	}
	for _, t := range clusterTables {
		if err := s.conn.Exec(ctx, "SYSTEM SYNC REPLICA "+s.db+"."+t); err != nil {
			return fmt.Errorf("sync replica %s: %w", t, err)
		}
	}
	return nil
}
