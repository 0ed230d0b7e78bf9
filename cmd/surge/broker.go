package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/ingest"
)

func newBrokerCmd() *cobra.Command {
	var (
		cfg     config
		dataDir string
		addr    string
		slow    int
		brokers int
		hold    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Run the embedded Kafka test broker (kfake) on its own, in the foreground",
		Long: `broker runs the embedded Kafka broker that ` + "`surge dev`" + ` starts in process (or, with
--brokers, a cluster of several: the first on --addr, the others on free loopback ports),
as a process of its own, with the topics created as --kafka-topic-config says and its data under --data-dir.
Point KAFKA_BROKERS at the addresses it prints. It is a test broker (one event loop, one
copy of the data whatever the replication factor): production points at a real Kafka
cluster.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := cfg.logger()
			if err != nil {
				return err
			}
			if _, err := cfg.topicSpecs(); err != nil {
				return err
			}
			k, err := devenv.StartKafka(cmd.Context(), devenv.KafkaOptions{
				Dir: filepath.Join(dataDir, "kafka"), Addr: addr, NumBrokers: brokers, Partitions: cfg.KafkaPartitions, Logger: logger,
				SlowProduceEvery: slow, SlowProduceDelay: hold,
			})
			if err != nil {
				return err
			}
			defer k.Stop()
			if err := ensureTopics(cmd.Context(), cfg, k.Brokers, logger); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "KAFKA_BROKERS="+strings.Join(k.Brokers, ","))
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "data", help("the broker keeps its data in <data-dir>/kafka", "DATA_DIR"))
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:19092", "listen address")
	cmd.Flags().IntVar(&slow, "fault-slow-produce-every", 0, "fault injection: hold every n-th produce request past its client's timeout before writing it (a lost acknowledgement); 0: off")
	cmd.Flags().DurationVar(&hold, "fault-slow-produce-delay", 6*time.Second, "fault injection: how long a slowed produce is held")
	cmd.Flags().IntVar(&brokers, "brokers", 1, "brokers of the cluster")
	cfg.addTopicFlags(cmd.Flags())
	cmd.Flags().StringVar(&cfg.LogFormat, "log-format", "text", help("log format: json or text", "LOG_FORMAT"))
	cmd.Flags().StringVar(&cfg.LogLevel, "log-level", "info", help("log level", "LOG_LEVEL"))
	return cmd
}

// ensureTopics creates the topics as configured on a broker this process
// started: one it cannot create stops the start.
func ensureTopics(ctx context.Context, cfg config, brokers []string, logger *slog.Logger) error {
	specs, err := cfg.topicSpecs()
	if err != nil {
		return err
	}
	if err := ingest.LogTopicMismatch(logger, ingest.EnsureTopics(ctx, brokers, specs)); err != nil {
		return fmt.Errorf("embedded Kafka broker: %w", err)
	}
	return nil
}
