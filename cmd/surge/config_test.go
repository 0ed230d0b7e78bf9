package main

import (
	"log/slog"
	"math"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/spf13/pflag"
)

func TestApplyEnv(t *testing.T) {
	for _, c := range []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string // substring; empty: no error
		check   func(t *testing.T, c config)
	}{
		{name: "defaults", check: func(t *testing.T, c config) {
			if c.KafkaPartitions != 6 || !c.Consumers || c.RedisCluster || c.ModelPoll != 30*time.Second || c.IngestDedupTTL != 5*time.Minute {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{name: "good values", env: map[string]string{"KAFKA_PARTITIONS": "12", "RUN_CONSUMERS": "false", "MODEL_POLL_INTERVAL": "5s", "RATE_LIMIT_RPS": "2.5", "REDIS_CLUSTER": "true"},
			check: func(t *testing.T, c config) {
				if c.KafkaPartitions != 12 || c.Consumers || c.ModelPoll != 5*time.Second || c.RatePerClient != 2.5 || !c.RedisCluster {
					t.Errorf("from the environment: %+v", c)
				}
			}},
		{name: "a flag wins over the environment", env: map[string]string{"KAFKA_PARTITIONS": "12"}, args: []string{"--kafka-partitions=3"},
			check: func(t *testing.T, c config) {
				if c.KafkaPartitions != 3 {
					t.Errorf("partitions %d, want the flag's 3", c.KafkaPartitions)
				}
			}},
		{name: "not a number", env: map[string]string{"KAFKA_PARTITIONS": "abc"}, wantErr: `KAFKA_PARTITIONS="abc" (flag --kafka-partitions)`},
		{name: "a boolean is true or false", env: map[string]string{"RUN_CONSUMERS": "1"}, wantErr: `RUN_CONSUMERS="1" (flag --consumers): want true or false`},
		{name: "not a duration", env: map[string]string{"QUOTE_VALIDITY": "60"}, wantErr: `QUOTE_VALIDITY="60"`},
		{name: "every bad value is named", env: map[string]string{"QUOTE_VALIDITY": "x", "LIVE_MAX_SUBSCRIPTIONS": "many"}, wantErr: "LIVE_MAX_SUBSCRIPTIONS"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var cfg config
			fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			cfg.addConnFlags(fs)
			cfg.addServeFlags(fs)
			if err := fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			err := applyEnv(fs)
			switch {
			case c.wantErr == "" && err != nil:
				t.Fatalf("applyEnv: %v", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Fatalf("applyEnv: %v, want an error containing %q", err, c.wantErr)
			}
			if c.check != nil {
				c.check(t, cfg)
			}
		})
	}
}

// TestEverySettingHasItsVariable: every flag of serve names its
// environment variable, so that applyEnv covers every setting.
func TestEverySettingHasItsVariable(t *testing.T) {
	var cfg config
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	cfg.addConnFlags(fs)
	cfg.addServeFlags(fs)
	fs.VisitAll(func(f *pflag.Flag) {
		if !envRE.MatchString(f.Usage) {
			t.Errorf("flag --%s names no environment variable: %q", f.Name, f.Usage)
		}
	})
}

// TestTopicSpecs: KAFKA_TOPIC_CONFIG and KAFKA_PARTITIONS reach the topic
// specs; a bad value stops the start with an error naming the setting.
func TestTopicSpecs(t *testing.T) {
	for _, c := range []struct {
		name    string
		env     map[string]string
		want    string // the user-events spec
		wantErr string
	}{
		{name: "defaults", want: "user-events:partitions=6,replication=1"},
		{name: "from the environment", env: map[string]string{"KAFKA_PARTITIONS": "12", "KAFKA_TOPIC_CONFIG": "*:replication=3,min.insync.replicas=2"},
			want: "user-events:partitions=12,replication=3,min.insync.replicas=2"},
		{name: "unknown topic", env: map[string]string{"KAFKA_TOPIC_CONFIG": "events:partitions=3"}, wantErr: `--kafka-topic-config (env KAFKA_TOPIC_CONFIG): unknown topic "events"`},
		{name: "no partitions", env: map[string]string{"KAFKA_PARTITIONS": "0"}, wantErr: "--kafka-partitions=0: want at least 1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			var cfg config
			fs := pflag.NewFlagSet("consume", pflag.ContinueOnError)
			cfg.addConnFlags(fs)
			if err := applyEnv(fs); err != nil {
				t.Fatal(err)
			}
			specs, err := cfg.topicSpecs()
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("topicSpecs: %v, want an error containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := specs[0].String(); got != c.want {
				t.Errorf("%s, want %s", got, c.want)
			}
		})
	}
}

func TestSetMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	logger := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		env     string
		wantErr bool
	}{
		{"abc", true},
		{"0", true},
		{"1.5", true},
		{"-0.2", true},
		{"off", false},
		{"0.5", false},
	} {
		t.Run(tc.env, func(t *testing.T) {
			debug.SetMemoryLimit(math.MaxInt64)
			t.Setenv("AUTOMEMLIMIT", tc.env)
			err := setMemoryLimit(logger)
			if (err != nil) != tc.wantErr {
				t.Fatalf("AUTOMEMLIMIT=%s: error %v, want error %v", tc.env, err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "AUTOMEMLIMIT") {
				t.Errorf("error %q does not name the variable", err)
			}
			got := debug.SetMemoryLimit(-1)
			want := int64(math.MaxInt64) // refused, off, or no container limit here
			if limit, err := memlimit.FromCgroup(); tc.env == "0.5" && err == nil {
				want = int64(float64(limit) * 0.5)
			}
			if got != want {
				t.Errorf("AUTOMEMLIMIT=%s: GOMEMLIMIT %d, want %d", tc.env, got, want)
			}
		})
	}
	// GOMEMLIMIT wins.
	t.Setenv("AUTOMEMLIMIT", "0.5")
	t.Setenv("GOMEMLIMIT", "123MiB")
	debug.SetMemoryLimit(123 << 20)
	if err := setMemoryLimit(logger); err != nil {
		t.Fatal(err)
	}
	if got := debug.SetMemoryLimit(-1); got != 123<<20 {
		t.Errorf("with GOMEMLIMIT set: %d, want %d", got, 123<<20)
	}
}
