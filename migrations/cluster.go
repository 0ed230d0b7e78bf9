package migrations

import (
	"fmt"
	"regexp"
	"strings"
)

// Cluster mode: the migration files are written for one server. When a
// cluster (a remote_servers entry of the servers' config) is named, each
// statement is rewritten when it is applied (ForCluster):
//
//   - CREATE TABLE t ... ENGINE = XMergeTree(args) becomes two tables, both
//     ON CLUSTER: t_local, ReplicatedXMergeTree('/clickhouse/tables/{shard}/
//     <db>.t_local', '{replica}', args), and t, a Distributed table over
//     t_local, so that every query keeps reading and writing t. Tables with
//     a kafka_partition column are sharded by it (a Kafka partition's rows,
//     hence its offsets in sink_offsets, live on one shard); the others by
//     rand().
//   - CREATE MATERIALIZED VIEW v TO t AS SELECT ... FROM s becomes ON
//     CLUSTER, TO t_local, FROM s_local: views fire on the server that
//     receives a block, into the local table of the same shard.
//   - DROP TABLE and ALTER TABLE become ON CLUSTER; a table's DROP drops
//     t then t_local; any ALTER changes t_local, and a column ALTER (ADD,
//     DROP, MODIFY COLUMN) then re-creates the Distributed t from t_local's
//     new structure (DROP, CREATE ... AS t_local: a ClickHouse server runs
//     an ALTER ON CLUSTER on one replica per shard, and refuses it for a
//     table that is not replicated, which a Distributed table never is; it
//     holds no rows, the sink's inserts being synchronous).
//
// Any other statement is refused: a new kind of statement needs a rule
// here, and a golden file in testdata/cluster shows what it becomes.

// localSuffix names the shard-local table under a Distributed one.
const localSuffix = "_local"

var (
	createTableRE  = regexp.MustCompile(`^CREATE TABLE IF NOT EXISTS \$\{database\}\.(\w+)\s*\(`)
	engineRE       = regexp.MustCompile(`^\s*ENGINE\s*=\s*(\w*MergeTree)\b`)
	createMVRE     = regexp.MustCompile(`^CREATE MATERIALIZED VIEW IF NOT EXISTS \$\{database\}\.(\w+)(\s+)TO \$\{database\}\.(\w+)(\s+AS\s)`)
	dropRE         = regexp.MustCompile(`^DROP TABLE IF EXISTS \$\{database\}\.(\w+)$`)
	alterRE        = regexp.MustCompile(`^ALTER TABLE \$\{database\}\.(\w+)(\s+)`)
	columnAlterRE  = regexp.MustCompile(`^(?i)(ADD|DROP|MODIFY)\s+COLUMN\b`)
	tableRefRE     = regexp.MustCompile(`\$\{database\}\.(\w+)\b`)
	partitionColRE = regexp.MustCompile(`[(,]\s*kafka_partition\s`)
)

// ForCluster returns all rewritten for the cluster named cluster (see the
// rules above), in the same order and with the same checksums: the files
// are the same, only the way they are applied differs. An empty cluster
// returns all unchanged. Statements keep their ${database} placeholder.
func ForCluster(all []Migration, cluster string) ([]Migration, error) {
	if cluster == "" {
		return all, nil
	}
	if !identRE.MatchString(cluster) {
		return nil, fmt.Errorf("migrations: invalid cluster name %q", cluster)
	}
	r := rewriter{cluster: cluster, tables: map[string]string{}}
	out := make([]Migration, len(all))
	for i, m := range all {
		out[i] = m
		out[i].Statements = nil
		for j, stmt := range m.Statements {
			rewritten, err := r.rewrite(stmt)
			if err != nil {
				return nil, fmt.Errorf("migrations: %s statement %d for cluster %s: %w", m.Name, j+1, cluster, err)
			}
			out[i].Statements = append(out[i].Statements, rewritten...)
		}
	}
	return out, nil
}

// rewriter carries, from one statement to the next, the tables that were
// split into a local and a Distributed table, with their sharding keys.
type rewriter struct {
	cluster string
	tables  map[string]string
}

func (r *rewriter) rewrite(stmt string) ([]string, error) {
	onCluster := " ON CLUSTER " + r.cluster
	switch {
	case createTableRE.MatchString(stmt):
		return r.createTable(stmt)
	case createMVRE.MatchString(stmt):
		m := createMVRE.FindStringSubmatchIndex(stmt)
		name, target := stmt[m[2]:m[3]], stmt[m[6]:m[7]]
		if _, ok := r.tables[target]; !ok {
			return nil, fmt.Errorf("materialized view %s: target %s is not a table of these migrations", name, target)
		}
		body := tableRefRE.ReplaceAllStringFunc(stmt[m[1]:], r.local)
		return []string{"CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}." + name + onCluster +
			stmt[m[4]:m[5]] + "TO ${database}." + target + localSuffix + stmt[m[8]:m[9]] + body}, nil
	case dropRE.MatchString(stmt):
		name := dropRE.FindStringSubmatch(stmt)[1]
		if _, ok := r.tables[name]; !ok {
			return []string{stmt + onCluster}, nil
		}
		delete(r.tables, name)
		return []string{stmt + onCluster, "DROP TABLE IF EXISTS ${database}." + name + localSuffix + onCluster}, nil
	case alterRE.MatchString(stmt):
		m := alterRE.FindStringSubmatchIndex(stmt)
		name, sep, action := stmt[m[2]:m[3]], stmt[m[4]:m[5]], stmt[m[1]:]
		if _, ok := r.tables[name]; !ok {
			return nil, fmt.Errorf("ALTER of %s, which is not a table of these migrations", name)
		}
		local := "ALTER TABLE ${database}." + name + localSuffix + onCluster + sep + action
		if !columnAlterRE.MatchString(action) {
			return []string{local}, nil
		}
		return []string{local, "DROP TABLE IF EXISTS ${database}." + name + onCluster, r.distributed(name)}, nil
	}
	first, _, _ := strings.Cut(stmt, "\n")
	return nil, fmt.Errorf("no cluster rule for %q", first)
}

// local maps a ${database}.name reference to the local table when name
// was split.
func (r *rewriter) local(ref string) string {
	if _, ok := r.tables[strings.TrimPrefix(ref, "${database}.")]; ok {
		return ref + localSuffix
	}
	return ref
}

// createTable rewrites CREATE TABLE ... (columns) ENGINE = XMergeTree[(args)] rest.
func (r *rewriter) createTable(stmt string) ([]string, error) {
	m := createTableRE.FindStringSubmatchIndex(stmt)
	name := stmt[m[2]:m[3]]
	open := m[1] - 1
	closing, err := matchParen(stmt, open)
	if err != nil {
		return nil, fmt.Errorf("table %s: %w", name, err)
	}
	columns := stmt[open : closing+1]
	rest := stmt[closing+1:]
	e := engineRE.FindStringSubmatchIndex(rest)
	if e == nil {
		return nil, fmt.Errorf("table %s: only MergeTree-family engines have a cluster rule", name)
	}
	engine := rest[e[2]:e[3]]
	if strings.HasPrefix(engine, "Replicated") {
		return nil, fmt.Errorf("table %s: engine %s is already replicated", name, engine)
	}
	local := name + localSuffix
	args := "'/clickhouse/tables/{shard}/${database}." + local + "', '{replica}'"
	tail := rest[e[1]:]
	if strings.HasPrefix(tail, "(") {
		end, err := matchParen(tail, 0)
		if err != nil {
			return nil, fmt.Errorf("table %s engine: %w", name, err)
		}
		if inner := strings.TrimSpace(tail[1:end]); inner != "" {
			args += ", " + inner
		}
		tail = tail[end+1:]
	}
	key := "rand()"
	if partitionColRE.MatchString(columns) {
		key = "kafka_partition"
	}
	r.tables[name] = key
	return []string{
		"CREATE TABLE IF NOT EXISTS ${database}." + local + " ON CLUSTER " + r.cluster + " " + columns +
			rest[:e[2]] + "Replicated" + engine + "(" + args + ")" + tail,
		r.distributed(name),
	}, nil
}

// distributed is the CREATE of the Distributed table name over its local
// table, with the structure the local table has when it runs.
func (r *rewriter) distributed(name string) string {
	local := name + localSuffix
	return "CREATE TABLE IF NOT EXISTS ${database}." + name + " ON CLUSTER " + r.cluster + " AS ${database}." + local +
		"\nENGINE = Distributed(" + r.cluster + ", ${database}, " + local + ", " + r.tables[name] + ")"
}

// matchParen returns the index of the ')' closing the '(' at s[open],
// skipping quoted strings.
func matchParen(s string, open int) (int, error) {
	depth := 0
	for i := open; i < len(s); i++ {
		switch c := s[i]; c {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i, nil
			}
		case '\'', '"', '`':
			for i++; i < len(s) && s[i] != c; i++ {
				if s[i] == '\\' {
					i++
				}
			}
		}
	}
	return 0, fmt.Errorf("unbalanced parenthesis at offset %d", open)
}
