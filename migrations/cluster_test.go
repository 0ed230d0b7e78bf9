package migrations

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

var update = flag.Bool("update", false, "rewrite testdata/cluster from the current rewriter")

// goldenCluster is the cluster name the golden files are written for.
const goldenCluster = "surge"

// TestForClusterGolden rewrites every embedded migration for a cluster and
// compares the statements, one per ';', with testdata/cluster/<name>.sql.
func TestForClusterGolden(t *testing.T) {
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ForCluster(all, goldenCluster)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(all) {
		t.Fatalf("ForCluster returned %d migrations, want %d", len(got), len(all))
	}
	for i, m := range got {
		if m.Name != all[i].Name || m.Version != all[i].Version || m.Checksum != all[i].Checksum {
			t.Errorf("migration %d: got %s/%d/%s, want the file's %s/%d/%s", i, m.Name, m.Version, m.Checksum, all[i].Name, all[i].Version, all[i].Checksum)
		}
		text := strings.Join(m.Statements, ";\n\n") + ";\n"
		path := filepath.Join("testdata", "cluster", m.Name+".sql")
		if *update {
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./migrations -run TestForClusterGolden -update)", err)
		}
		if text != string(want) {
			t.Errorf("%s rewritten for cluster %s differs from %s:\n%s", m.Name, goldenCluster, path, text)
		}
		// The golden file is a script Split reads back statement for statement.
		if back, err := Split(string(want)); err != nil || !reflect.DeepEqual(back, m.Statements) {
			t.Errorf("%s: Split(golden) = %d statements, %v; want the %d rewritten", path, len(back), err, len(m.Statements))
		}
	}
}

func TestForClusterEmptyIsIdentity(t *testing.T) {
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ForCluster(all, "")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, all) {
		t.Fatal("ForCluster(all, \"\") changed the migrations")
	}
}

// TestForClusterRules covers the rules no embedded migration uses yet.
func TestForClusterRules(t *testing.T) {
	const base = "CREATE TABLE IF NOT EXISTS ${database}.t (k String, v UInt64) ENGINE = MergeTree(v) ORDER BY k;\n"
	tests := []struct {
		name   string
		script string
		want   []string // statements after base's two
		err    string
	}{
		{
			name:   "add column changes local then re-creates distributed",
			script: base + "ALTER TABLE ${database}.t ADD COLUMN w UInt8",
			want: []string{
				"ALTER TABLE ${database}.t_local ON CLUSTER c ADD COLUMN w UInt8",
				"DROP TABLE IF EXISTS ${database}.t ON CLUSTER c",
				"CREATE TABLE IF NOT EXISTS ${database}.t ON CLUSTER c AS ${database}.t_local\nENGINE = Distributed(c, ${database}, t_local, rand())",
			},
		},
		{
			name: "drop column too, with the table's sharding key",
			script: base + "CREATE TABLE IF NOT EXISTS ${database}.p (k String, kafka_partition UInt32) ENGINE = MergeTree ORDER BY k;\n" +
				"ALTER TABLE ${database}.p DROP COLUMN k",
			want: []string{
				"CREATE TABLE IF NOT EXISTS ${database}.p_local ON CLUSTER c (k String, kafka_partition UInt32) ENGINE = " +
					"ReplicatedMergeTree('/clickhouse/tables/{shard}/${database}.p_local', '{replica}') ORDER BY k",
				"CREATE TABLE IF NOT EXISTS ${database}.p ON CLUSTER c AS ${database}.p_local\nENGINE = Distributed(c, ${database}, p_local, kafka_partition)",
				"ALTER TABLE ${database}.p_local ON CLUSTER c DROP COLUMN k",
				"DROP TABLE IF EXISTS ${database}.p ON CLUSTER c",
				"CREATE TABLE IF NOT EXISTS ${database}.p ON CLUSTER c AS ${database}.p_local\nENGINE = Distributed(c, ${database}, p_local, kafka_partition)",
			},
		},
		{
			name:   "other alters change the local table",
			script: base + "ALTER TABLE ${database}.t DELETE WHERE k = ''",
			want:   []string{"ALTER TABLE ${database}.t_local ON CLUSTER c DELETE WHERE k = ''"},
		},
		{
			name:   "drop of a table drops distributed then local, and forgets it",
			script: base + "DROP TABLE IF EXISTS ${database}.t;\nDROP TABLE IF EXISTS ${database}.t",
			want: []string{
				"DROP TABLE IF EXISTS ${database}.t ON CLUSTER c",
				"DROP TABLE IF EXISTS ${database}.t_local ON CLUSTER c",
				"DROP TABLE IF EXISTS ${database}.t ON CLUSTER c",
			},
		},
		{
			name:   "old-style engine arguments follow path and replica",
			script: base + "CREATE TABLE IF NOT EXISTS ${database}.o (d Date, k String) ENGINE = MergeTree(d, (k, d), 8192)",
			want: []string{
				"CREATE TABLE IF NOT EXISTS ${database}.o_local ON CLUSTER c (d Date, k String) ENGINE = " +
					"ReplicatedMergeTree('/clickhouse/tables/{shard}/${database}.o_local', '{replica}', d, (k, d), 8192)",
				"CREATE TABLE IF NOT EXISTS ${database}.o ON CLUSTER c AS ${database}.o_local\nENGINE = Distributed(c, ${database}, o_local, rand())",
			},
		},
		{
			name:   "a kafka_partition column is the sharding key",
			script: base + "CREATE TABLE IF NOT EXISTS ${database}.p (k String, kafka_partition UInt32) ENGINE = MergeTree ORDER BY k",
			want: []string{
				"CREATE TABLE IF NOT EXISTS ${database}.p_local ON CLUSTER c (k String, kafka_partition UInt32) ENGINE = " +
					"ReplicatedMergeTree('/clickhouse/tables/{shard}/${database}.p_local', '{replica}') ORDER BY k",
				"CREATE TABLE IF NOT EXISTS ${database}.p ON CLUSTER c AS ${database}.p_local\nENGINE = Distributed(c, ${database}, p_local, kafka_partition)",
			},
		},
		{name: "alter of an unknown table", script: "ALTER TABLE ${database}.nope ADD COLUMN x UInt8", err: "not a table of these migrations"},
		{name: "view into an unknown table", script: "CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.v TO ${database}.nope AS SELECT 1", err: "target nope"},
		{name: "engine without a rule", script: "CREATE TABLE IF NOT EXISTS ${database}.m (x UInt8) ENGINE = Memory", err: "only MergeTree-family"},
		{name: "already replicated", script: "CREATE TABLE IF NOT EXISTS ${database}.m (x UInt8) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY x", err: "already replicated"},
		{name: "statement without a rule", script: "RENAME TABLE ${database}.a TO ${database}.b", err: "no cluster rule"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := load(fstest.MapFS{"0001_x.sql": {Data: []byte(tt.script)}})
			if err != nil {
				t.Fatal(err)
			}
			got, err := ForCluster(ms, "c")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			baseOut := []string{
				"CREATE TABLE IF NOT EXISTS ${database}.t_local ON CLUSTER c (k String, v UInt64) ENGINE = " +
					"ReplicatedMergeTree('/clickhouse/tables/{shard}/${database}.t_local', '{replica}', v) ORDER BY k",
				"CREATE TABLE IF NOT EXISTS ${database}.t ON CLUSTER c AS ${database}.t_local\nENGINE = Distributed(c, ${database}, t_local, rand())",
			}
			if stmts := got[0].Statements; !reflect.DeepEqual(stmts[:2], baseOut) {
				t.Errorf("base table: got %q\nwant %q", stmts[:2], baseOut)
			}
			if stmts := got[0].Statements[2:]; !reflect.DeepEqual(stmts, tt.want) {
				t.Errorf("got %q\nwant %q", stmts, tt.want)
			}
		})
	}
}

func TestForClusterRefusesBadName(t *testing.T) {
	if _, err := ForCluster(nil, "a-b; DROP"); err == nil {
		t.Fatal("ForCluster accepted a cluster name that is not an identifier")
	}
}
