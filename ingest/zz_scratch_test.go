package ingest

import (
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/surgeworks/surge/devenv"
	"github.com/surgeworks/surge/internal/testenv"
	"github.com/surgeworks/surge/ratelimit"
)

func TestScratchServe(t *testing.T) {
	rs := testenv.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr, PoolSize: 64})
	kf := testenv.KafkaWith(t, devenv.KafkaOptions{Topics: EventTopics, Partitions: 3})
	writer := NewEventWriter(kf.Brokers)
	in, err := NewIntake(rdb, writer, ratelimit.NewLimiter(rdb, ratelimit.Options{}), IntakeOptions{UserHashKey: []byte("k"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:18080")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(EventsPath, in.Handler())
	go http.Serve(ln, mux)
	time.Sleep(150 * time.Second)
}
