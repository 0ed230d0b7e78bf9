package devenv

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestClickHouseClusterConfig renders the config of the second replica of
// a 2 x 2 cluster and reads back what replication and ON CLUSTER need.
func TestClickHouseClusterConfig(t *testing.T) {
	dir := t.TempDir()
	c := &ClickHouseCluster{Name: "surge", ZooKeeper: "127.0.0.1:2181", Shards: [][]string{
		{"127.0.0.1:9001", "127.0.0.1:9002"}, {"127.0.0.1:9003", "127.0.0.1:9004"},
	}}
	shard, replica, err := c.macros("127.0.0.1:9004")
	if err != nil || shard != "2" || replica != "r2" {
		t.Fatalf("macros = %q, %q, %v; want 2, r2", shard, replica, err)
	}
	if _, _, err := c.macros("127.0.0.1:9005"); err == nil {
		t.Error("macros of an address in no shard succeeded")
	}
	cfg := &clusterConfig{ClickHouseCluster: c, Shard: shard, Replica: replica, ZKHost: "127.0.0.1", ZKPort: "2181", InterserverPort: 9109}
	if err := writeClickHouseConfig(dir, "127.0.0.1:9004", "127.0.0.1:8124", "information", cfg); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "config.xml"))
	if err != nil {
		t.Fatal(err)
	}
	type replicaXML struct {
		Host string `xml:"host"`
		Port string `xml:"port"`
	}
	var got struct {
		InterserverHost string `xml:"interserver_http_host"`
		InterserverPort string `xml:"interserver_http_port"`
		ZooKeeper       struct {
			Host string `xml:"node>host"`
			Port string `xml:"node>port"`
		} `xml:"zookeeper"`
		Shard   string `xml:"macros>shard"`
		Replica string `xml:"macros>replica"`
		Shards  []struct {
			Internal string       `xml:"internal_replication"`
			Replicas []replicaXML `xml:"replica"`
		} `xml:"remote_servers>surge>shard"`
		DDLPath string `xml:"distributed_ddl>path"`
	}
	if err := xml.Unmarshal(data, &got); err != nil {
		t.Fatalf("config.xml: %v\n%s", err, data)
	}
	if got.InterserverHost != "127.0.0.1" || got.InterserverPort != "9109" || got.ZooKeeper.Host != "127.0.0.1" ||
		got.ZooKeeper.Port != "2181" || got.Shard != "2" || got.Replica != "r2" || got.DDLPath == "" || len(got.Shards) != 2 {
		t.Fatalf("config.xml read back as %+v", got)
	}
	wantShards := [][]replicaXML{
		{{"127.0.0.1", "9001"}, {"127.0.0.1", "9002"}},
		{{"127.0.0.1", "9003"}, {"127.0.0.1", "9004"}},
	}
	for i, s := range got.Shards {
		if s.Internal != "true" || !reflect.DeepEqual(s.Replicas, wantShards[i]) {
			t.Errorf("shard %d = %+v, want internal_replication true and %+v", i+1, s, wantShards[i])
		}
	}

	// Without a cluster: no replication port, ZooKeeper or cluster.
	if err := writeClickHouseConfig(dir, "127.0.0.1:9004", "127.0.0.1:8124", "information", nil); err != nil {
		t.Fatal(err)
	}
	data, err = os.ReadFile(filepath.Join(dir, "config.xml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"<interserver_http_port>", "<zookeeper>", "<macros>", "<remote_servers>"} {
		if strings.Contains(string(data), tag) {
			t.Errorf("single-server config has %s", tag)
		}
	}
}
