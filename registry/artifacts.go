package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ArtifactStore keeps model artifacts (the serialised model bytes) under a
// URI that is recorded in the registry.
type ArtifactStore interface {
	// Put stores data for a model version and returns its URI. A version's
	// artifact is immutable: putting different bytes for a version that
	// already has an artifact is an error wrapping ErrArtifactExists;
	// putting the same bytes again returns the same URI.
	Put(ctx context.Context, name, version string, data []byte) (uri string, err error)
	// Get returns the bytes stored under uri.
	Get(ctx context.Context, uri string) ([]byte, error)
}

// ErrArtifactExists is returned when a version already has another artifact.
var ErrArtifactExists = errors.New("registry: artifact already exists")

// DefaultLocalDir is the LocalStore directory used when none is given.
const DefaultLocalDir = "data/models"

// localScheme prefixes the URIs of a LocalStore. The path after it is
// relative to the store's directory, so the registry stays valid when the
// directory moves (another checkout, another machine with a copy).
const localScheme = "local:"

// LocalStore keeps artifacts as files <dir>/<name>/<version>.bin, with URIs
// "local:<name>/<version>.bin". It is safe for concurrent use, also by
// several processes sharing the directory.
type LocalStore struct {
	dir string
}

// NewLocalStore returns a store rooted at dir (default DefaultLocalDir),
// creating the directory if needed.
func NewLocalStore(dir string) (*LocalStore, error) {
	if dir == "" {
		dir = DefaultLocalDir
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("registry: artifact dir %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("registry: artifact dir: %w", err)
	}
	return &LocalStore{dir: abs}, nil
}

// Dir is the absolute root directory.
func (s *LocalStore) Dir() string { return s.dir }

// Put writes the artifact to a temporary file and links it into place, so
// that a reader never sees a partial file and a second writer cannot
// replace it.
func (s *LocalStore) Put(ctx context.Context, name, version string, data []byte) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := checkName(name); err != nil {
		return "", err
	}
	if err := checkName(version); err != nil {
		return "", err
	}
	rel := name + "/" + version + ".bin"
	path := filepath.Join(s.dir, filepath.FromSlash(rel))
	uri := localScheme + rel
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("registry: put artifact %s: %w", uri, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+version+".*.tmp")
	if err != nil {
		return "", fmt.Errorf("registry: put artifact %s: %w", uri, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return "", fmt.Errorf("registry: put artifact %s: %w", uri, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("registry: put artifact %s: %w", uri, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("registry: put artifact %s: %w", uri, err)
	}
	// Link fails when the target exists: the first writer wins.
	if err := os.Link(tmp.Name(), path); err != nil {
		if !errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("registry: put artifact %s: %w", uri, err)
		}
		old, rerr := os.ReadFile(path)
		if rerr != nil {
			return "", fmt.Errorf("registry: put artifact %s: %w", uri, rerr)
		}
		if !bytes.Equal(old, data) {
			return "", fmt.Errorf("%w: %s", ErrArtifactExists, uri)
		}
	}
	return uri, nil
}

// Get reads the artifact of a "local:" URI.
func (s *LocalStore) Get(ctx context.Context, uri string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rel, ok := strings.CutPrefix(uri, localScheme)
	if !ok || rel == "" || !filepath.IsLocal(filepath.FromSlash(rel)) {
		return nil, fmt.Errorf("registry: %q is not a local artifact URI", uri)
	}
	data, err := os.ReadFile(filepath.Join(s.dir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, fmt.Errorf("registry: get artifact %s: %w", uri, err)
	}
	return data, nil
}
