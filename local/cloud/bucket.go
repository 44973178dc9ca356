package cloud

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// BucketOptions configure NewBucket.
type BucketOptions struct {
	// Name is the bucket's name; Dir the folder that holds its objects (created if missing), one file per key.
	Name, Dir string
	// Region and Account go into the Object Created events.
	Region, Account string
	// OnObjectCreated receives an EventBridge "Object Created" event (JSON, as AWS sends it) after each
	// PutObject, so the local stack can route uploads to the state machine as EventBridge does.
	OnObjectCreated func(event []byte)
}

// Bucket is a local S3 bucket backed by a folder.
type Bucket struct {
	opts BucketOptions

	mu   sync.Mutex
	seq  uint64
	meta map[string]objectMeta // what PutObject knew; files placed by hand get theirs computed
}

type objectMeta struct {
	etag, versionID string
}

// NewBucket opens (creating) the bucket's folder.
func NewBucket(opts BucketOptions) (*Bucket, error) {
	if opts.Name == "" || opts.Dir == "" {
		return nil, fmt.Errorf("local bucket: name and folder are required")
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if opts.Account == "" {
		opts.Account = "111122223333"
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("local bucket: %w", err)
	}
	return &Bucket{opts: opts, meta: map[string]objectMeta{}}, nil
}

// Name is the bucket's name.
func (b *Bucket) Name() string { return b.opts.Name }

func s3Error(code, msg string) error {
	return &smithy.GenericAPIError{Code: code, Message: msg, Fault: smithy.FaultClient}
}

// file maps a key to its file, refusing keys that would leave the folder.
func (b *Bucket) file(bucket, key string) (string, error) {
	if bucket != b.opts.Name {
		return "", s3Error("NoSuchBucket", "The specified bucket does not exist: "+bucket)
	}
	clean := path.Clean("/" + key)
	if key == "" || strings.HasSuffix(key, "/") || clean != "/"+key || strings.Contains(key, "\\") {
		return "", s3Error("InvalidArgument", fmt.Sprintf("the local bucket does not store key %q", key))
	}
	return filepath.Join(b.opts.Dir, filepath.FromSlash(key)), nil
}

// PutObject stores an object and emits its Object Created event.
func (b *Bucket) PutObject(_ context.Context, in *s3.PutObjectInput, _ ...func(*s3.Options)) (*s3.PutObjectOutput, error) {
	key := aws.ToString(in.Key)
	file, err := b.file(aws.ToString(in.Bucket), key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".put-*")
	if err != nil {
		return nil, err
	}
	h := md5.New()
	var body io.Reader = bytes.NewReader(nil)
	if in.Body != nil {
		body = in.Body
	}
	size, err := io.Copy(io.MultiWriter(tmp, h), body)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("local bucket: put %s: %w", key, err)
	}
	b.mu.Lock()
	b.seq++
	seq := b.seq
	m := objectMeta{etag: hex.EncodeToString(h.Sum(nil)), versionID: randomID(16)}
	b.meta[key] = m
	b.mu.Unlock()
	if b.opts.OnObjectCreated != nil {
		b.opts.OnObjectCreated(b.objectCreated(key, size, m, seq))
	}
	return &s3.PutObjectOutput{ETag: aws.String(`"` + m.etag + `"`), VersionId: aws.String(m.versionID), Size: aws.Int64(size)}, nil
}

func randomID(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	for i := range buf {
		buf[i] = alphabet[int(buf[i])%len(alphabet)]
	}
	return string(buf)
}

// objectCreated renders the event EventBridge delivers for an upload (events/testdata/valid/s3-object-created.json).
func (b *Bucket) objectCreated(key string, size int64, m objectMeta, seq uint64) []byte {
	id := randomHex(16)
	type object struct {
		Key       string `json:"key"`
		Size      int64  `json:"size"`
		ETag      string `json:"etag"`
		VersionID string `json:"version-id"`
		Sequencer string `json:"sequencer"`
	}
	detail := struct {
		Version         string            `json:"version"`
		Bucket          map[string]string `json:"bucket"`
		Object          object            `json:"object"`
		RequestID       string            `json:"request-id"`
		Requester       string            `json:"requester"`
		SourceIPAddress string            `json:"source-ip-address"`
		Reason          string            `json:"reason"`
	}{"0", map[string]string{"name": b.opts.Name}, object{key, size, m.etag, m.versionID, fmt.Sprintf("%018X", seq)},
		strings.ToUpper(randomID(16)), b.opts.Account, "127.0.0.1", "PutObject"}
	env := struct {
		Version    string   `json:"version"`
		ID         string   `json:"id"`
		DetailType string   `json:"detail-type"`
		Source     string   `json:"source"`
		Account    string   `json:"account"`
		Time       string   `json:"time"`
		Region     string   `json:"region"`
		Resources  []string `json:"resources"`
		Detail     any      `json:"detail"`
	}{"0", id[:8] + "-" + id[8:12] + "-" + id[12:16] + "-" + id[16:20] + "-" + id[20:], "Object Created", "aws.s3",
		b.opts.Account, time.Now().UTC().Format(time.RFC3339), b.opts.Region, []string{"arn:aws:s3:::" + b.opts.Name}, detail}
	data, _ := json.Marshal(env)
	return data
}

// stat finds an object's file, size and metadata.
func (b *Bucket) stat(bucket, key string) (string, os.FileInfo, objectMeta, error) {
	file, err := b.file(bucket, key)
	if err != nil {
		return "", nil, objectMeta{}, err
	}
	st, err := os.Stat(file)
	if err != nil || st.IsDir() {
		return "", nil, objectMeta{}, &s3types.NoSuchKey{Message: aws.String("The specified key does not exist.")}
	}
	b.mu.Lock()
	m, ok := b.meta[key]
	b.mu.Unlock()
	if !ok {
		// Placed in the folder by hand: hash it once.
		f, err := os.Open(file)
		if err != nil {
			return "", nil, objectMeta{}, err
		}
		h := md5.New()
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", nil, objectMeta{}, err
		}
		m = objectMeta{etag: hex.EncodeToString(h.Sum(nil)), versionID: "null"}
		b.mu.Lock()
		b.meta[key] = m
		b.mu.Unlock()
	}
	return file, st, m, nil
}

// HeadObject reports an object's size and ETag; a missing key is NotFound, as S3 answers HEAD.
func (b *Bucket) HeadObject(_ context.Context, in *s3.HeadObjectInput, _ ...func(*s3.Options)) (*s3.HeadObjectOutput, error) {
	_, st, m, err := b.stat(aws.ToString(in.Bucket), aws.ToString(in.Key))
	if _, missing := err.(*s3types.NoSuchKey); missing {
		return nil, &s3types.NotFound{Message: aws.String("Not Found")}
	}
	if err != nil {
		return nil, err
	}
	return &s3.HeadObjectOutput{ContentLength: aws.Int64(st.Size()), ETag: aws.String(`"` + m.etag + `"`),
		LastModified: aws.Time(st.ModTime().UTC()), VersionId: aws.String(m.versionID), AcceptRanges: aws.String("bytes"),
		ContentType: aws.String("binary/octet-stream")}, nil
}

// GetObject reads an object, or the byte range Range asks for (bytes=a-b, bytes=a-, bytes=-n) answered with
// ContentRange and the range's ContentLength as S3 does; a missing key is NoSuchKey, an unsatisfiable range
// InvalidRange.
func (b *Bucket) GetObject(_ context.Context, in *s3.GetObjectInput, _ ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	file, st, m, err := b.stat(aws.ToString(in.Bucket), aws.ToString(in.Key))
	if err != nil {
		return nil, err
	}
	size := st.Size()
	start, end, ranged, err := parseRange(aws.ToString(in.Range), size)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	out := &s3.GetObjectOutput{
		Body: readCloser{io.LimitReader(f, end-start+1), f}, ContentLength: aws.Int64(end - start + 1),
		ETag: aws.String(`"` + m.etag + `"`), LastModified: aws.Time(st.ModTime().UTC()), AcceptRanges: aws.String("bytes"),
		VersionId: aws.String(m.versionID), ContentType: aws.String("binary/octet-stream"),
	}
	if size == 0 {
		out.ContentLength = aws.Int64(0)
	}
	if ranged {
		out.ContentRange = aws.String(fmt.Sprintf("bytes %d-%d/%d", start, end, size))
	}
	return out, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// parseRange reads a single HTTP byte range against size. An empty or unparsable header means the whole object,
// as S3 ignores a malformed Range; a range starting past the end is InvalidRange.
func parseRange(h string, size int64) (start, end int64, ranged bool, err error) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, size - 1, false, nil
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, size - 1, false, nil
	}
	invalid := s3Error("InvalidRange", "The requested range is not satisfiable")
	switch {
	case first == "":
		n, perr := strconv.ParseInt(last, 10, 64)
		if perr != nil || n < 0 {
			return 0, size - 1, false, nil
		}
		if n == 0 || size == 0 {
			return 0, 0, false, invalid
		}
		return max(0, size-n), size - 1, true, nil
	default:
		a, perr := strconv.ParseInt(first, 10, 64)
		if perr != nil || a < 0 {
			return 0, size - 1, false, nil
		}
		b := size - 1
		if last != "" {
			if b, perr = strconv.ParseInt(last, 10, 64); perr != nil || b < a {
				return 0, size - 1, false, nil
			}
			b = min(b, size-1)
		}
		if a >= size {
			return 0, 0, false, invalid
		}
		return a, b, true, nil
	}
}
