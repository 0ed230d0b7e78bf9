package registry

import (
	"bytes"
	"errors"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// fakeS3 serves an in-memory S3 on 127.0.0.1 with the given buckets and
// returns its endpoint URL.
func fakeS3(t *testing.T, buckets ...string) string {
	t.Helper()
	backend := s3mem.New()
	for _, b := range buckets {
		if err := backend.CreateBucket(b); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	return srv.URL
}

func testS3Options(endpoint string) S3Options {
	return S3Options{Endpoint: endpoint, Region: "us-east-1", AccessKeyID: "test-key", SecretAccessKey: "test-secret"}
}

func TestS3Store(t *testing.T) {
	ctx := ctxT(t)
	endpoint := fakeS3(t, "models")
	s, err := NewS3Store(ctx, "s3://models/surge/artifacts/", testS3Options(endpoint))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.URL(); got != "s3://models/surge/artifacts" {
		t.Fatalf("URL = %q", got)
	}
	data := bytes.Repeat([]byte("onnx"), 5000)
	uri, err := s.Put(ctx, "demand", "v1", data)
	if err != nil {
		t.Fatal(err)
	}
	if want := "s3://models/surge/artifacts/demand/v1.bin"; uri != want {
		t.Fatalf("uri = %q, want %q", uri, want)
	}
	got, err := s.Get(ctx, uri)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get = %d bytes, %v", len(got), err)
	}
	// The same bytes again: idempotent.
	if again, err := s.Put(ctx, "demand", "v1", data); err != nil || again != uri {
		t.Fatalf("second Put of equal bytes = %q, %v", again, err)
	}
	// Other bytes for the same version: refused, the first artifact stays.
	if _, err := s.Put(ctx, "demand", "v1", []byte("other")); !errors.Is(err, ErrArtifactExists) {
		t.Fatalf("Put of other bytes = %v, want ErrArtifactExists", err)
	}
	if got, err := s.Get(ctx, uri); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after refused overwrite Get = %d bytes, %v", len(got), err)
	}
	if uri2, err := s.Put(ctx, "demand", "v2", []byte("other")); err != nil || uri2 != "s3://models/surge/artifacts/demand/v2.bin" {
		t.Fatalf("Put v2 = %q, %v", uri2, err)
	}

	for _, bad := range [][2]string{{"../x", "v1"}, {"demand", "v1/../../y"}, {"", "v1"}} {
		if _, err := s.Put(ctx, bad[0], bad[1], data); err == nil {
			t.Errorf("Put(%q, %q) accepted", bad[0], bad[1])
		}
	}
	for _, bad := range []string{"local:demand/v1.bin", "s3://other/surge/artifacts/demand/v1.bin", "s3://models", "s3://models/surge/artifacts/demand/v9.bin"} {
		if _, err := s.Get(ctx, bad); err == nil {
			t.Errorf("Get(%q) succeeded", bad)
		}
	}
}

func TestS3StoreConcurrentPutsOneWins(t *testing.T) {
	ctx := ctxT(t)
	s, err := NewS3Store(ctx, "s3://models", testS3Options(fakeS3(t, "models")))
	if err != nil {
		t.Fatal(err)
	}
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			_, errs[i] = s.Put(ctx, "demand", "v1", []byte{byte(i)})
		})
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Fatalf("writers %d and %d both stored v1", won, i)
		case err == nil:
			won = i
		case !errors.Is(err, ErrArtifactExists):
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no writer stored v1")
	}
	got, err := s.Get(ctx, "s3://models/demand/v1.bin")
	if err != nil || !bytes.Equal(got, []byte{byte(won)}) {
		t.Fatalf("stored %v, %v; want writer %d's bytes", got, err, won)
	}
}

func TestNewS3StoreErrors(t *testing.T) {
	ctx := ctxT(t)
	endpoint := fakeS3(t, "models")
	for _, u := range []string{"s3://", "s3:///prefix", "models", "s3://models/a/../b"} {
		if _, err := NewS3Store(ctx, u, testS3Options(endpoint)); err == nil {
			t.Errorf("NewS3Store(%q) accepted", u)
		}
	}
	if _, err := NewS3Store(ctx, "s3://missing", testS3Options(endpoint)); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing bucket: %v", err)
	}
	if _, err := NewS3Store(ctx, "s3://models", testS3Options("ftp://"+strings.TrimPrefix(endpoint, "http://"))); err == nil {
		t.Error("ftp endpoint accepted")
	}
}

func TestOpenStore(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	st, err := OpenStore(ctx, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	if ls, ok := st.(*LocalStore); !ok || ls.Dir() != dir {
		t.Fatalf("OpenStore(\"\") = %T %v, want the local store in %s", st, st, dir)
	}

	t.Setenv("MODEL_STORE_ENDPOINT", fakeS3(t, "models"))
	t.Setenv("AWS_ACCESS_KEY_ID", "test-key")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
	t.Setenv("AWS_REGION", "eu-west-1")
	st, err = OpenStore(ctx, "s3://models/prod", dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.(*S3Store); !ok {
		t.Fatalf("OpenStore(s3://…) = %T", st)
	}
	uri, err := st.Put(ctx, "demand", "v1", []byte("model"))
	if err != nil || uri != "s3://models/prod/demand/v1.bin" {
		t.Fatalf("Put = %q, %v", uri, err)
	}
	if _, err := OpenStore(ctx, "gs://models", dir); err == nil {
		t.Error("OpenStore accepted gs://")
	}
}

// TestRegistryOnS3 registers and loads versions with their artifacts in the
// S3 store.
func TestRegistryOnS3(t *testing.T) {
	ctx := ctxT(t)
	reg, _ := newRegistry(t)
	s, err := NewS3Store(ctx, "s3://models/registry", testS3Options(fakeS3(t, "models")))
	if err != nil {
		t.Fatal(err)
	}
	reg.store = s
	artifact := bytes.Repeat([]byte{0x08, 0x01, 0x12}, 1000)
	e, err := reg.Register(ctx, Entry{Name: "demand", Status: StatusActive}, artifact)
	if err != nil {
		t.Fatal(err)
	}
	if e.ArtifactURI != "s3://models/registry/demand/v1.bin" {
		t.Fatalf("artifact URI %q", e.ArtifactURI)
	}
	active, err := reg.Active(ctx, "demand")
	if err != nil {
		t.Fatal(err)
	}
	got, err := reg.Load(ctx, active)
	if err != nil || !bytes.Equal(got, artifact) {
		t.Fatalf("Load = %d bytes, %v", len(got), err)
	}
}
