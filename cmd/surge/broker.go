package main

import (
	"fmt"
	"path/filepath"
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
		hold    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Run the embedded Kafka test broker (kfake) on its own, in the foreground",
		Long: `broker runs the embedded single-node Kafka broker that ` + "`surge dev`" + ` starts in process,
as a process of its own, with the topics created and its data under --data-dir. Point
KAFKA_BROKERS at it. It is a test broker (one event loop, no replication): production
points at a real Kafka cluster.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := cfg.logger()
			if err != nil {
				return err
			}
			k, err := devenv.StartKafka(cmd.Context(), devenv.KafkaOptions{
				Dir: filepath.Join(dataDir, "kafka"), Addr: addr, Partitions: cfg.KafkaPartitions, Topics: ingest.Topics, Logger: logger,
				SlowProduceEvery: slow, SlowProduceDelay: hold,
			})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "KAFKA_BROKERS="+k.Brokers[0])
			<-cmd.Context().Done()
			k.Stop()
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "data", help("the broker keeps its data in <data-dir>/kafka", "DATA_DIR"))
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:19092", "listen address")
	cmd.Flags().IntVar(&slow, "fault-slow-produce-every", 0, "fault injection: hold every n-th produce request past its client's timeout before writing it (a lost acknowledgement); 0: off")
	cmd.Flags().DurationVar(&hold, "fault-slow-produce-delay", 6*time.Second, "fault injection: how long a slowed produce is held")
	cmd.Flags().IntVar(&cfg.KafkaPartitions, "kafka-partitions", 6, help("partitions of the topics created", "KAFKA_PARTITIONS"))
	cmd.Flags().StringVar(&cfg.LogFormat, "log-format", "text", help("log format: json or text", "LOG_FORMAT"))
	cmd.Flags().StringVar(&cfg.LogLevel, "log-level", "info", help("log level", "LOG_LEVEL"))
	return cmd
}
