package steps

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/ollama/ollama/fs/ggml"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/deployment"
)

const (
	// ggufBlock is the size of one ranged GET; header reads are sequential, so a few blocks cover a header.
	ggufBlock = 1 << 20
	// ggufHeaderBudget caps the header bytes read from S3: real headers (tokenizer included) stay under ~20 MiB.
	ggufHeaderBudget = 64 << 20
	// Limits no real model header comes near, checked before ollama's decoder allocates from the header's claims.
	ggufMaxString  = 1 << 20
	ggufMaxKV      = 1 << 16
	ggufMaxTensors = 1 << 20
	ggufMaxDims    = 8
	ggufMaxArray   = 1 << 24
)

// rangeReader is an io.ReadSeeker over an S3 object that fetches fixed blocks with ranged GETs and keeps them, so
// the guard pass and the decoder share the reads and the tensor data is never downloaded.
type rangeReader struct {
	// awsErr is the last S3 failure, typed: the decoder wraps read errors, and a throttled read must reach the
	// state machine as the retryable error it is, not as a bad file.
	awsErr error
	ctx    context.Context
	s3     deployment.ObjectReader
	bucket string
	key    string
	size   int64
	off    int64
	blocks map[int64][]byte
	read   int64
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	idx := r.off / ggufBlock
	blk, ok := r.blocks[idx]
	if !ok {
		if r.read >= ggufHeaderBudget {
			return 0, fmt.Errorf("header larger than %d MiB", ggufHeaderBudget>>20)
		}
		start := idx * ggufBlock
		end := min(start+ggufBlock, r.size) - 1
		out, err := r.s3.GetObject(r.ctx, &s3.GetObjectInput{
			Bucket: aws.String(r.bucket), Key: aws.String(r.key), Range: aws.String(fmt.Sprintf("bytes=%d-%d", start, end)),
		})
		if err != nil {
			r.awsErr = deployment.AWSError("s3:GetObject", err)
			return 0, r.awsErr
		}
		blk, err = io.ReadAll(io.LimitReader(out.Body, end-start+1))
		out.Body.Close()
		if err != nil {
			return 0, err
		}
		if int64(len(blk)) != end-start+1 {
			return 0, fmt.Errorf("short ranged read: %d of %d bytes", len(blk), end-start+1)
		}
		r.blocks[idx] = blk
		r.read += int64(len(blk))
	}
	n := copy(p, blk[r.off-idx*ggufBlock:])
	r.off += int64(n)
	return n, nil
}

func (r *rangeReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	}
	if offset < 0 {
		return 0, errors.New("seek before start")
	}
	r.off = offset
	return offset, nil
}

// readGGUFModel sizes an uploaded GGUF from its header alone, read with ranged GETs.
func readGGUFModel(ctx context.Context, s3c deployment.ObjectReader, bucket, key string, size int64, name string) (catalog.Model, error) {
	bad := func(format string, args ...any) error {
		return &deployment.NotGGUFError{Key: key, Reason: fmt.Sprintf(format, args...)}
	}
	if size < 32 {
		return catalog.Model{}, bad("%d bytes is too small for a GGUF header", size)
	}
	rr := &rangeReader{ctx: ctx, s3: s3c, bucket: bucket, key: key, size: size, blocks: map[int64][]byte{}}
	if err := guardGGUF(rr); err != nil {
		if rr.awsErr != nil {
			return catalog.Model{}, rr.awsErr
		}
		return catalog.Model{}, bad("%v", err)
	}
	if _, err := rr.Seek(0, io.SeekStart); err != nil {
		return catalog.Model{}, bad("%v", err)
	}
	f, err := ggml.Decode(rr, 1<<20)
	if err != nil {
		if rr.awsErr != nil {
			return catalog.Model{}, rr.awsErr
		}
		return catalog.Model{}, bad("%v", err)
	}
	kv := f.KV()
	arch := kv.Architecture()
	vocab := len(kv.Strings("tokenizer.ggml.tokens"))
	m := catalog.Model{
		Name:            name,
		Family:          arch,
		ParameterCount:  int64(kv.ParameterCount()),
		Quantization:    kv.FileType().String(),
		SizeBytes:       size,
		BlockCount:      int(kv.BlockCount()),
		EmbeddingLength: int(kv.EmbeddingLength()),
		HeadCount:       int(kv.HeadCountMax()),
		HeadCountKV:     int(kv.HeadCountKVMax()),
		KeyLength:       int(kv.EmbeddingHeadCountK()),
		ValueLength:     int(kv.EmbeddingHeadCountV()),
		ContextLength:   int(kv.ContextLength()),
		VocabSize:       vocab,
	}
	if arch == "" {
		return catalog.Model{}, bad("no general.architecture in the header")
	}
	if err := m.Validate(); err != nil {
		return catalog.Model{}, bad("%v", err)
	}
	return m, nil
}

// guardGGUF walks the header's structure before ollama's decoder does, refusing lengths and counts no real model
// has: the decoder allocates whatever the header claims (a string of 4 GB, a tensor of 4 billion dimensions).
func guardGGUF(r io.Reader) error {
	var hdr struct {
		Magic   [4]byte
		Version uint32
	}
	if err := binary.Read(r, binary.LittleEndian, &hdr); err != nil {
		return fmt.Errorf("reading the header: %w", err)
	}
	if string(hdr.Magic[:]) != "GGUF" {
		return fmt.Errorf("file starts with %q, not the GGUF magic", strings.ToValidUTF8(string(hdr.Magic[:]), "?"))
	}
	if hdr.Version != 2 && hdr.Version != 3 {
		return fmt.Errorf("GGUF version %d is not supported (2 or 3)", hdr.Version)
	}
	var counts struct{ Tensors, KV uint64 }
	if err := binary.Read(r, binary.LittleEndian, &counts); err != nil {
		return fmt.Errorf("reading the counts: %w", err)
	}
	if counts.Tensors > ggufMaxTensors || counts.KV > ggufMaxKV {
		return fmt.Errorf("header claims %d tensors and %d keys; the limits are %d and %d",
			counts.Tensors, counts.KV, ggufMaxTensors, ggufMaxKV)
	}
	g := ggufGuard{r: r}
	for range counts.KV {
		if err := g.skipString(); err != nil {
			return err
		}
		t, err := g.u32()
		if err != nil {
			return err
		}
		if err := g.skipValue(t, 0); err != nil {
			return err
		}
	}
	for range counts.Tensors {
		if err := g.skipString(); err != nil {
			return err
		}
		dims, err := g.u32()
		if err != nil {
			return err
		}
		if dims > ggufMaxDims {
			return fmt.Errorf("a tensor claims %d dimensions; at most %d", dims, ggufMaxDims)
		}
		if err := g.skip(int64(dims)*8 + 4 + 8); err != nil {
			return err
		}
	}
	return nil
}

type ggufGuard struct {
	r   io.Reader
	buf [8]byte
}

func (g *ggufGuard) u32() (uint32, error) {
	if _, err := io.ReadFull(g.r, g.buf[:4]); err != nil {
		return 0, fmt.Errorf("truncated header: %w", err)
	}
	return binary.LittleEndian.Uint32(g.buf[:4]), nil
}

func (g *ggufGuard) u64() (uint64, error) {
	if _, err := io.ReadFull(g.r, g.buf[:8]); err != nil {
		return 0, fmt.Errorf("truncated header: %w", err)
	}
	return binary.LittleEndian.Uint64(g.buf[:8]), nil
}

func (g *ggufGuard) skip(n int64) error {
	if m, err := io.CopyN(io.Discard, g.r, n); err != nil {
		return fmt.Errorf("truncated header after %d of %d bytes: %w", m, n, err)
	}
	return nil
}

func (g *ggufGuard) skipString() error {
	n, err := g.u64()
	if err != nil {
		return err
	}
	if n > ggufMaxString {
		return fmt.Errorf("a string claims %d bytes; at most %d", n, ggufMaxString)
	}
	return g.skip(int64(n))
}

// GGUF value types, as numbered by the format.
var ggufScalarSize = map[uint32]int64{0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

const (
	ggufString = 8
	ggufArray  = 9
)

func (g *ggufGuard) skipValue(t uint32, depth int) error {
	if size, ok := ggufScalarSize[t]; ok {
		return g.skip(size)
	}
	switch t {
	case ggufString:
		return g.skipString()
	case ggufArray:
		if depth > 0 {
			return errors.New("nested arrays are not used by GGUF models")
		}
		et, err := g.u32()
		if err != nil {
			return err
		}
		n, err := g.u64()
		if err != nil {
			return err
		}
		if n > ggufMaxArray {
			return fmt.Errorf("an array claims %d elements; at most %d", n, ggufMaxArray)
		}
		if size, ok := ggufScalarSize[et]; ok {
			return g.skip(size * int64(n))
		}
		for range n {
			if err := g.skipValue(et, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("unknown value type %d", t)
}
