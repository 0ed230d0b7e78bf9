package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/dockerignore"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
)

// dockerfile is ../Dockerfile parsed by BuildKit's own parser.
type dockerfile struct {
	stages   []instructions.Stage
	metaArgs map[string]string
}

var parseDockerfile = sync.OnceValues(func() (*dockerfile, error) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		return nil, err
	}
	res, err := parser.Parse(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	stages, meta, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil, err
	}
	df := &dockerfile{stages: stages, metaArgs: map[string]string{}}
	for _, a := range meta {
		for _, kv := range a.Args {
			if kv.Value != nil {
				df.metaArgs[kv.Key] = *kv.Value
			}
		}
	}
	return df, nil
})

func mustDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	df, err := parseDockerfile()
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	return df
}

// stage returns the named stage ("" : the last, the image) and its ARG
// defaults over the meta ARGs, for expanding ${NAME}.
func (df *dockerfile) stage(t *testing.T, name string) (*instructions.Stage, func(string) string) {
	t.Helper()
	var s *instructions.Stage
	if name == "" {
		s = &df.stages[len(df.stages)-1]
	}
	for i := range df.stages {
		if df.stages[i].Name == name && name != "" {
			s = &df.stages[i]
		}
	}
	if s == nil {
		t.Fatalf("Dockerfile: no stage %q", name)
	}
	args := map[string]string{}
	for k, v := range df.metaArgs {
		args[k] = v
	}
	for _, c := range s.Commands {
		if a, ok := c.(*instructions.ArgCommand); ok {
			for _, kv := range a.Args {
				if kv.Value != nil {
					args[kv.Key] = *kv.Value
				}
			}
		}
	}
	return s, func(v string) string { return os.Expand(v, func(k string) string { return args[k] }) }
}

func commands[C instructions.Command](s *instructions.Stage) []C {
	var out []C
	for _, c := range s.Commands {
		if x, ok := c.(C); ok {
			out = append(out, x)
		}
	}
	return out
}

// dockerfileUser is the numeric uid the image runs as.
func dockerfileUser(t *testing.T) int64 {
	t.Helper()
	img, _ := mustDockerfile(t).stage(t, "")
	users := commands[*instructions.UserCommand](img)
	if len(users) == 0 {
		t.Fatal("Dockerfile: the image sets no USER (it would run as root)")
	}
	uid, _, _ := strings.Cut(users[len(users)-1].User, ":")
	n, err := strconv.ParseInt(uid, 10, 64)
	if err != nil || n == 0 {
		t.Fatalf("Dockerfile: USER %s: want a numeric non-zero uid (runAsNonRoot can verify only a number)", users[len(users)-1].User)
	}
	return n
}

// installDepsVar reads NAME=value from scripts/install-deps.sh, the one
// other place that fetches ONNX Runtime.
func installDepsVar(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "scripts/install-deps.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + name + `=(\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("scripts/install-deps.sh: no %s=", name)
	}
	return string(m[1])
}

func TestDockerfile(t *testing.T) {
	df := mustDockerfile(t)
	src := mustSource(t)

	build, buildExp := df.stage(t, "build")
	if base := buildExp(build.BaseName); !strings.HasPrefix(base, "golang:1.26") || !strings.Contains(base, "bookworm") {
		t.Errorf("build stage FROM %s: want golang:1.26 on bookworm (the runtime's glibc)", base)
	}
	img, imgExp := df.stage(t, "")
	if base := imgExp(img.BaseName); base != "debian:bookworm-slim" && !strings.HasPrefix(base, "gcr.io/distroless/cc-debian12") {
		t.Errorf("image FROM %s: want debian:bookworm-slim or distroless/cc (glibc and libstdc++ for ONNX Runtime)", base)
	}
	dockerfileUser(t)

	// The binary: cgo, from ./cmd/surge, with the web assets of the web stage.
	var built bool
	for _, r := range commands[*instructions.RunCommand](build) {
		line := strings.Join(r.CmdLine, " ")
		built = built || (strings.Contains(line, "CGO_ENABLED=1") && strings.Contains(line, "go build") && strings.Contains(line, "-o /out/surge ./cmd/surge"))
	}
	if !built {
		t.Error("build stage: no `CGO_ENABLED=1 go build ... -o /out/surge ./cmd/surge`")
	}
	var webAssets bool
	for _, c := range commands[*instructions.CopyCommand](build) {
		webAssets = webAssets || (c.From == "web" && strings.HasSuffix(c.SourcePaths[0], "web/dist") && strings.HasSuffix(filepath.Clean(c.DestPath), "web/dist"))
	}
	if !webAssets {
		t.Error("build stage: web/dist is not copied from the web stage (go:embed takes it)")
	}

	// ONNX Runtime: the version and checksum of scripts/install-deps.sh,
	// verified, at the path ORT_LIB_PATH names.
	ort, ortExp := df.stage(t, "ort")
	if v, want := ortExp("${ORT_VERSION}"), installDepsVar(t, "ORT_VERSION"); v != want {
		t.Errorf("ort stage ORT_VERSION %s, scripts/install-deps.sh %s", v, want)
	}
	if v, want := ortExp("${ORT_SHA256}"), installDepsVar(t, "ORT_SHA256"); v != want {
		t.Errorf("ort stage ORT_SHA256 %s, scripts/install-deps.sh %s", v, want)
	}
	var verified bool
	for _, r := range commands[*instructions.RunCommand](ort) {
		line := strings.Join(r.CmdLine, " ")
		verified = verified || (strings.Contains(line, "${ORT_SHA256}") && strings.Contains(line, "sha256sum -c"))
	}
	if !verified {
		t.Error("ort stage: the library is not checked with sha256sum -c against ORT_SHA256")
	}
	if v := imgExp("${ORT_VERSION}"); v != ortExp("${ORT_VERSION}") {
		t.Errorf("image ORT_VERSION %s, ort stage %s", v, ortExp("${ORT_VERSION}"))
	}
	env := map[string]string{}
	for _, e := range commands[*instructions.EnvCommand](img) {
		for _, kv := range e.Env {
			env[kv.Key] = imgExp(kv.Value)
			if !src.env[kv.Key] {
				t.Errorf("image ENV %s: no environment variable the binary reads", kv.Key)
			}
		}
	}
	copied := map[string]string{} // destination → stage
	for _, c := range commands[*instructions.CopyCommand](img) {
		copied[imgExp(c.DestPath)] = c.From
	}
	if p := env["ORT_LIB_PATH"]; p == "" || copied[p] != "ort" {
		t.Errorf("image ORT_LIB_PATH=%q is not where the ort stage's library is copied (%v)", p, copied)
	}
	entry := commands[*instructions.EntrypointCommand](img)
	if len(entry) != 1 || len(entry[0].CmdLine) != 1 || copied[entry[0].CmdLine[0]] != "build" || entry[0].PrependShell {
		t.Errorf("image ENTRYPOINT %v: want the exec form of the binary copied from the build stage", entry)
	}
}

// TestDockerignore checks that .dockerignore keeps out of the build context
// no file the image build uses: the Go files and embedded files of every
// package cmd/surge depends on, the module files, the web sources.
func TestDockerignore(t *testing.T) {
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	patterns, err := dockerignore.ReadAll(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "go", "list", "-deps", "-json=ImportPath,Dir,Module,GoFiles,CgoFiles,EmbedFiles", "./cmd/surge")
	cmd.Dir = repoRoot
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	need := []string{"go.mod", "go.sum", "web/package.json", "web/package-lock.json", "web/build.mjs", "web/src/main.ts"}
	dec := json.NewDecoder(bytes.NewReader(out))
	packages := 0
	for dec.More() {
		var p struct {
			ImportPath, Dir               string
			Module                        *struct{ Main bool }
			GoFiles, CgoFiles, EmbedFiles []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.Module == nil || !p.Module.Main {
			continue
		}
		packages++
		rel, err := filepath.Rel(root, p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, names := range [][]string{p.GoFiles, p.CgoFiles, p.EmbedFiles} {
			for _, n := range names {
				need = append(need, filepath.ToSlash(filepath.Join(rel, n)))
			}
		}
	}
	if packages < 10 {
		t.Fatalf("go list found %d packages of the main module under cmd/surge", packages)
	}
	// Secrets and local state stay out of the context (and so out of
	// every layer and the builder's cache).
	for _, p := range []string{".git", "data/admin-api-key", "data/user-hash-key", ".cache/onnxruntime/libonnxruntime.so.1.24.1",
		"deploy/kubernetes/overlays/production/secrets.env", "web/node_modules/esbuild/package.json"} {
		if ex, err := pm.MatchesOrParentMatches(p); err != nil || !ex {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}
	for _, p := range need {
		if _, err := os.Stat(filepath.Join(repoRoot, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
		ex, err := pm.MatchesOrParentMatches(p)
		if err != nil {
			t.Fatal(err)
		}
		if ex {
			t.Errorf(".dockerignore excludes %s, which the image build needs", p)
		}
	}
}
