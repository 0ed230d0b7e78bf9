package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Scheme prefixes the URIs of an S3Store: "s3://<bucket>/<key>".
const s3Scheme = "s3://"

// S3Options configures an S3Store. Empty fields take the defaults.
type S3Options struct {
	// Endpoint of an S3-compatible service (MinIO, Ceph, R2, …):
	// "host:port" (HTTPS) or "http://host:port" / "https://host". Default
	// Amazon S3.
	Endpoint string
	Region   string
	// AccessKeyID and SecretAccessKey (and SessionToken for temporary
	// credentials) sign the requests. When AccessKeyID is empty, the
	// credentials of the instance role (EC2, ECS) are used.
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	// Transport replaces the HTTP transport (tests, proxies).
	Transport http.RoundTripper
}

// S3OptionsFromEnv reads the standard AWS variables (AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION or
// AWS_DEFAULT_REGION) and MODEL_STORE_ENDPOINT.
func S3OptionsFromEnv() S3Options {
	region := os.Getenv("AWS_REGION")
	if region == "" {
		region = os.Getenv("AWS_DEFAULT_REGION")
	}
	return S3Options{
		Endpoint:        os.Getenv("MODEL_STORE_ENDPOINT"),
		Region:          region,
		AccessKeyID:     os.Getenv("AWS_ACCESS_KEY_ID"),
		SecretAccessKey: os.Getenv("AWS_SECRET_ACCESS_KEY"),
		SessionToken:    os.Getenv("AWS_SESSION_TOKEN"),
	}
}

// S3Store keeps artifacts in an S3-compatible object store as objects
// <prefix>/<name>/<version>.bin of one bucket, with URIs
// "s3://<bucket>/<prefix>/<name>/<version>.bin". Writes are conditional
// (If-None-Match: *), so the first writer of a version wins, also across
// processes. It is safe for concurrent use.
type S3Store struct {
	client *minio.Client
	bucket string
	prefix string // without leading or trailing '/'; may be empty
}

// ParseS3URL splits "s3://bucket/prefix" into its bucket and key prefix.
func ParseS3URL(u string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(u, s3Scheme)
	if !ok {
		return "", "", fmt.Errorf("registry: model store %q: want s3://bucket[/prefix]", u)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	prefix = strings.Trim(prefix, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("registry: model store %q: no bucket", u)
	}
	if prefix != "" && path.Clean(prefix) != prefix {
		return "", "", fmt.Errorf("registry: model store %q: unclean prefix %q", u, prefix)
	}
	return bucket, prefix, nil
}

// NewS3Store opens the store of storeURL ("s3://bucket[/prefix]") and checks
// that the bucket exists.
func NewS3Store(ctx context.Context, storeURL string, opts S3Options) (*S3Store, error) {
	bucket, prefix, err := ParseS3URL(storeURL)
	if err != nil {
		return nil, err
	}
	endpoint, secure := "s3.amazonaws.com", true
	if opts.Endpoint != "" {
		endpoint = opts.Endpoint
		if strings.Contains(endpoint, "://") {
			u, err := url.Parse(endpoint)
			if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
				return nil, fmt.Errorf("registry: model store endpoint %q: want host[:port] or http(s)://host[:port]", opts.Endpoint)
			}
			endpoint, secure = u.Host, u.Scheme == "https"
		}
	}
	var creds *credentials.Credentials
	if opts.AccessKeyID != "" {
		creds = credentials.NewStaticV4(opts.AccessKeyID, opts.SecretAccessKey, opts.SessionToken)
	} else {
		creds = credentials.NewIAM("")
	}
	client, err := minio.New(endpoint, &minio.Options{
		Creds: creds, Secure: secure, Region: opts.Region, Transport: opts.Transport,
	})
	if err != nil {
		return nil, fmt.Errorf("registry: model store %s: %w", storeURL, err)
	}
	ok, err := client.BucketExists(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("registry: model store %s at %s: %w", storeURL, endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("registry: model store %s: bucket %q does not exist at %s", storeURL, bucket, endpoint)
	}
	return &S3Store{client: client, bucket: bucket, prefix: prefix}, nil
}

// URL is the store's "s3://bucket[/prefix]".
func (s *S3Store) URL() string {
	if s.prefix == "" {
		return s3Scheme + s.bucket
	}
	return s3Scheme + s.bucket + "/" + s.prefix
}

// Put uploads the artifact unless the version already has one; equal
// bytes are accepted again, other bytes give ErrArtifactExists.
func (s *S3Store) Put(ctx context.Context, name, version string, data []byte) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := checkName(name); err != nil {
		return "", err
	}
	if err := checkName(version); err != nil {
		return "", err
	}
	key := name + "/" + version + ".bin"
	if s.prefix != "" {
		key = s.prefix + "/" + key
	}
	uri := s3Scheme + s.bucket + "/" + key
	// Look first, so that a service ignoring If-None-Match still never
	// overwrites an artifact written before; the conditional write closes
	// the race between two writers on the services that honour it.
	old, err := s.get(ctx, key)
	if err == nil {
		return existing(old, data, uri)
	}
	if minio.ToErrorResponse(err).StatusCode != http.StatusNotFound {
		return "", fmt.Errorf("registry: put artifact %s: %w", uri, err)
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true}
	opts.SetMatchETagExcept("*") // If-None-Match: * — only when no object is there
	if _, err = s.client.PutObject(ctx, s.bucket, key, bytes.NewReader(data), int64(len(data)), opts); err == nil {
		return uri, nil
	}
	if resp := minio.ToErrorResponse(err); resp.StatusCode != http.StatusPreconditionFailed && resp.Code != "PreconditionFailed" {
		return "", fmt.Errorf("registry: put artifact %s: %w", uri, err)
	}
	if old, err = s.get(ctx, key); err != nil {
		return "", fmt.Errorf("registry: put artifact %s: written meanwhile but unreadable: %w", uri, err)
	}
	return existing(old, data, uri)
}

// existing accepts an artifact already stored when it equals data.
func existing(old, data []byte, uri string) (string, error) {
	if !bytes.Equal(old, data) {
		return "", fmt.Errorf("%w: %s", ErrArtifactExists, uri)
	}
	return uri, nil
}

// Get downloads the artifact of an "s3://" URI of the store's bucket.
func (s *S3Store) Get(ctx context.Context, uri string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rest, ok := strings.CutPrefix(uri, s3Scheme)
	bucket, key, _ := strings.Cut(rest, "/")
	if !ok || key == "" {
		return nil, fmt.Errorf("registry: %q is not an s3 artifact URI", uri)
	}
	if bucket != s.bucket {
		return nil, fmt.Errorf("registry: artifact %s is in bucket %q, the model store uses %q", uri, bucket, s.bucket)
	}
	data, err := s.get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("registry: get artifact %s: %w", uri, err)
	}
	return data, nil
}

func (s *S3Store) get(ctx context.Context, key string) ([]byte, error) {
	obj, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	return io.ReadAll(obj)
}

// OpenStore returns the artifact store of storeURL: a LocalStore in
// localDir when storeURL is empty, an S3Store (configured from the
// environment, see S3OptionsFromEnv) for "s3://bucket[/prefix]".
func OpenStore(ctx context.Context, storeURL, localDir string) (ArtifactStore, error) {
	switch {
	case storeURL == "":
		return NewLocalStore(localDir)
	case strings.HasPrefix(storeURL, s3Scheme):
		return NewS3Store(ctx, storeURL, S3OptionsFromEnv())
	}
	return nil, fmt.Errorf("registry: model store %q: want s3://bucket[/prefix], or empty for the local directory", storeURL)
}
