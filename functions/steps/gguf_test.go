package steps

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"

	"github.com/ollama-ecs/ollama-ecs/catalog/gguf"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
)

// memObject serves one object's bytes to ranged GETs, counting what was read.
type memObject struct {
	data []byte
	read int
	// failAfter, when positive, makes every GET after that many bytes fail with err.
	failAfter int
	err       error
}

var _ deployment.ObjectReader = (*memObject)(nil)

func (m *memObject) GetObject(_ context.Context, in *s3.GetObjectInput, _ ...func(*s3.Options)) (*s3.GetObjectOutput, error) {
	start, end := 0, len(m.data)-1
	if r := aws.ToString(in.Range); r != "" {
		a, b, _ := strings.Cut(strings.TrimPrefix(r, "bytes="), "-")
		start, _ = strconv.Atoi(a)
		end, _ = strconv.Atoi(b)
	}
	if start >= len(m.data) {
		return nil, fmt.Errorf("range not satisfiable")
	}
	if m.failAfter > 0 && m.read >= m.failAfter {
		return nil, m.err
	}
	end = min(end, len(m.data)-1)
	m.read += end - start + 1
	return &s3.GetObjectOutput{Body: io.NopCloser(bytes.NewReader(m.data[start : end+1]))}, nil
}

func ggufHeader(kv uint64, tensors uint64, rest ...[]byte) []byte {
	b := []byte("GGUF")
	b = binary.LittleEndian.AppendUint32(b, 3)
	b = binary.LittleEndian.AppendUint64(b, tensors)
	b = binary.LittleEndian.AppendUint64(b, kv)
	for _, r := range rest {
		b = append(b, r...)
	}
	return append(b, make([]byte, 64)...)
}

func u64(n uint64) []byte { return binary.LittleEndian.AppendUint64(nil, n) }
func u32(n uint32) []byte { return binary.LittleEndian.AppendUint32(nil, n) }

func TestReadGGUFModel(t *testing.T) {
	tiny, err := tinymodel.Bytes(tinymodel.Options{BlockCount: 3, ContextLength: 4096})
	if err != nil {
		t.Fatal(err)
	}
	// A big file whose tensor data is never read: only the header is fetched.
	big := append(bytes.Clone(tiny), make([]byte, 8<<20)...)
	obj := &memObject{data: big}
	m, err := readGGUFModel(context.Background(), obj, "b", "models/tiny.gguf", int64(len(big)), "tiny")
	if err != nil {
		t.Fatal(err)
	}
	if m.BlockCount != 3 || m.ContextLength != 4096 || m.Family != "llama" || m.VocabSize != 300 || m.ParameterCount <= 0 {
		t.Errorf("model %+v", m)
	}
	if obj.read > 2*gguf.Block {
		t.Errorf("read %d bytes of a %d-byte file to size it", obj.read, len(big))
	}

	hostile := map[string][]byte{
		"not GGUF":             []byte(strings.Repeat("hello world ", 10)),
		"truncated":            tiny[:200],
		"billion tensors":      ggufHeader(0, 1<<30),
		"huge key string":      ggufHeader(1, 0, u64(4<<30)),
		"huge array":           ggufHeader(1, 0, u64(1), []byte("k"), u32(9), u32(4), u64(1<<40)),
		"huge tensor dims":     ggufHeader(1, 1, u64(1), []byte("k"), u32(4), u32(7), u64(1), []byte("t"), u32(1<<31)),
		"unknown value type":   ggufHeader(1, 0, u64(1), []byte("k"), u32(99)),
		"version 9":            append([]byte("GGUF\x09\x00\x00\x00"), make([]byte, 64)...),
		"no architecture":      ggufHeader(0, 0),
		"tiny with bad widths": corruptKV(t, tiny),
	}
	for name, data := range hostile {
		t.Run(name, func(t *testing.T) {
			_, err := readGGUFModel(context.Background(), &memObject{data: data}, "b", "models/x.gguf", int64(len(data)), "x")
			if _, ok := err.(*deployment.NotGGUFError); !ok {
				t.Fatalf("got %T %v, want *deployment.NotGGUFError", err, err)
			}
		})
	}

	// A throttled ranged GET in the middle of the header is S3's problem, not the file's: the step returns the
	// retryable error itself, unwrapped, however deep in the decoder the read failed.
	throttled := &memObject{data: big, failAfter: 1, err: &smithy.GenericAPIError{Code: "SlowDown", Message: "slow down"}}
	// Two 900 kB string values: the header runs past the first 1 MiB block, whose successor's GET fails.
	bigHeader := ggufHeader(2, 0, u64(1), []byte("a"), u32(8), u64(900000), make([]byte, 900000),
		u64(1), []byte("b"), u32(8), u64(900000), make([]byte, 900000))
	throttled.data = bigHeader
	_, err = readGGUFModel(context.Background(), throttled, "b", "models/x.gguf", int64(len(bigHeader)), "x")
	if _, ok := err.(*deployment.ThrottlingError); !ok {
		t.Errorf("throttled read: got %T %v, want *deployment.ThrottlingError", err, err)
	}
}

// corruptKV rewrites the model's head count to zero, which the sizing rules refuse.
func corruptKV(t *testing.T, file []byte) []byte {
	key := []byte("llama.attention.head_count")
	i := bytes.Index(file, key)
	if i < 0 {
		t.Fatal("head_count key not found")
	}
	out := bytes.Clone(file)
	// key, then the uint32 type, then the uint32 value
	binary.LittleEndian.PutUint32(out[i+len(key)+4:], 0)
	return out
}

// FuzzGGUFHeader: any bytes are sized or refused as NotGGUFError, cheaply; never a panic or a huge allocation.
func FuzzGGUFHeader(f *testing.F) {
	tiny, err := tinymodel.Bytes(tinymodel.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tiny)
	f.Add(tiny[:100])
	f.Add(ggufHeader(1, 0, u64(4<<30)))
	f.Add(ggufHeader(1, 1, u64(1), []byte("k"), u32(4), u32(7), u64(1), []byte("t"), u32(1<<31)))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := readGGUFModel(context.Background(), &memObject{data: data}, "b", "models/x.gguf", int64(len(data)), "x")
		if err == nil {
			return
		}
		// Unwrapped: the state machine matches the error's own type name.
		if _, ok := err.(*deployment.NotGGUFError); !ok {
			t.Fatalf("got %T %v", err, err)
		}
	})
}
