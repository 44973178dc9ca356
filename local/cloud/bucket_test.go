package cloud

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ollama-ecs/ollama-ecs/events"
)

func TestBucket(t *testing.T) {
	ctx := context.Background()
	var got [][]byte
	b, err := NewBucket(BucketOptions{Name: "models-bucket", Dir: t.TempDir(), OnObjectCreated: func(ev []byte) { got = append(got, ev) }})
	if err != nil {
		t.Fatal(err)
	}
	const body = "0123456789abcdef"
	put, err := b.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("models-bucket"), Key: aws.String("models/tiny.gguf"), Body: strings.NewReader(body)})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		rng, want, contentRange, code string
	}{
		{"", body, "", ""},
		{"bytes=0-3", "0123", "bytes 0-3/16", ""},
		{"bytes=10-", "abcdef", "bytes 10-15/16", ""},
		{"bytes=-4", "cdef", "bytes 12-15/16", ""},
		{"bytes=14-100", "ef", "bytes 14-15/16", ""},
		{"bytes=16-20", "", "", "InvalidRange"},
		{"bytes=5-2", body, "", ""}, // malformed: S3 ignores it
	}
	for _, c := range cases {
		out, err := b.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("models-bucket"), Key: aws.String("models/tiny.gguf"), Range: aws.String(c.rng)})
		if c.code != "" {
			if apiCode(err) != c.code {
				t.Errorf("GetObject(%q) = %v, want %s", c.rng, err, c.code)
			}
			continue
		}
		if err != nil {
			t.Fatalf("GetObject(%q): %v", c.rng, err)
		}
		data, _ := io.ReadAll(out.Body)
		out.Body.Close()
		if string(data) != c.want || aws.ToInt64(out.ContentLength) != int64(len(c.want)) || aws.ToString(out.ContentRange) != c.contentRange ||
			aws.ToString(out.ETag) != aws.ToString(put.ETag) {
			t.Errorf("GetObject(%q) = %q, length %d, range %q, etag %s; want %q, %d, %q, %s", c.rng, data, aws.ToInt64(out.ContentLength),
				aws.ToString(out.ContentRange), aws.ToString(out.ETag), c.want, len(c.want), c.contentRange, aws.ToString(put.ETag))
		}
	}
	for _, c := range []struct{ bucket, key, code string }{
		{"models-bucket", "models/none.gguf", "NoSuchKey"},
		{"other", "models/tiny.gguf", "NoSuchBucket"},
		{"models-bucket", "../escape", "InvalidArgument"},
		{"models-bucket", "models/", "InvalidArgument"},
	} {
		if _, err := b.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(c.bucket), Key: aws.String(c.key)}); apiCode(err) != c.code {
			t.Errorf("GetObject(%s/%s) = %v, want %s", c.bucket, c.key, err, c.code)
		}
	}
	head, err := b.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("models-bucket"), Key: aws.String("models/tiny.gguf")})
	if err != nil || aws.ToInt64(head.ContentLength) != 16 {
		t.Errorf("HeadObject = %+v, %v", head, err)
	}
	if _, err := b.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("models-bucket"), Key: aws.String("nope")}); apiCode(err) != "NotFound" {
		t.Errorf("HeadObject of a missing key: %v, want NotFound", err)
	}
	// The event is one the deploy workflow accepts as an upload.
	if len(got) != 1 {
		t.Fatalf("%d Object Created events, want 1", len(got))
	}
	in, err := events.Parse(got[0], events.Config{ModelPrefix: "models/", Bucket: "models-bucket"}, "")
	if err != nil {
		t.Fatalf("events.Parse(%s): %v", got[0], err)
	}
	if in.Kind != events.KindUpload || in.Upload.Key != "models/tiny.gguf" || in.Envelope.DetailType != "Object Created" {
		t.Fatalf("parsed %+v", in)
	}
	var detail events.ObjectCreated
	if err := decodeJSON(in.Envelope.Detail, &detail); err != nil || detail.Object.Size != 16 || `"`+detail.Object.ETag+`"` != aws.ToString(put.ETag) ||
		detail.Object.VersionID != aws.ToString(put.VersionId) || detail.Object.Sequencer == "" || detail.RequestID == "" {
		t.Fatalf("detail %+v, %v", detail, err)
	}
}

func decodeJSON(raw []byte, v any) error { return json.Unmarshal(raw, v) }
