// Package gguf sizes a model from its GGUF header alone: a reader over ranged reads (S3 GETs, registry blob GETs)
// that fetches fixed blocks and never the tensor data, and a guard that walks the header's structure before
// Ollama's decoder allocates from its claims.
package gguf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ollama/ollama/fs/ggml"

	"github.com/ollama-ecs/ollama-ecs/catalog"
)

const (
	// Block is the size of one ranged read; header reads are sequential, so a few blocks cover a header.
	Block = 1 << 20
	// HeaderBudget caps the header bytes read: real headers (tokenizer included) stay under ~20 MiB.
	HeaderBudget = 64 << 20
	// Limits no real model header comes near, checked before ollama's decoder allocates from the header's claims.
	maxString  = 1 << 20
	maxKV      = 1 << 16
	maxTensors = 1 << 20
	maxDims    = 8
	maxArray   = 1 << 24
)

// Fetch reads bytes start..end (inclusive) of the file.
type Fetch func(ctx context.Context, start, end int64) ([]byte, error)

// HeaderError is a file whose header is not a usable GGUF model: not GGUF, truncated, or claiming sizes no real
// model has.
type HeaderError struct{ Reason string }

func (e *HeaderError) Error() string { return e.Reason }

// reader is an io.ReadSeeker over a file of a known size that fetches fixed blocks and keeps them, so the guard
// pass and the decoder share the reads and the tensor data is never downloaded.
type reader struct {
	ctx    context.Context
	fetch  Fetch
	size   int64
	off    int64
	blocks map[int64][]byte
	read   int64
	// fetchErr is the last fetch failure, kept as it came: the decoder wraps read errors, and a throttled read
	// must reach the caller as the error it is, not as a bad file.
	fetchErr error
}

func (r *reader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	idx := r.off / Block
	blk, ok := r.blocks[idx]
	if !ok {
		if r.read >= HeaderBudget {
			return 0, fmt.Errorf("header larger than %d MiB", HeaderBudget>>20)
		}
		start := idx * Block
		end := min(start+Block, r.size) - 1
		var err error
		blk, err = r.fetch(r.ctx, start, end)
		if err != nil {
			r.fetchErr = err
			return 0, err
		}
		if int64(len(blk)) != end-start+1 {
			return 0, fmt.Errorf("short ranged read: %d of %d bytes", len(blk), end-start+1)
		}
		r.blocks[idx] = blk
		r.read += int64(len(blk))
	}
	n := copy(p, blk[r.off-idx*Block:])
	r.off += int64(n)
	return n, nil
}

func (r *reader) Seek(offset int64, whence int) (int64, error) {
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

// ReadModel sizes a GGUF file of size bytes from its header, read through fetch, as the model name. It returns the
// bytes it read; a bad header is a *HeaderError, a fetch failure the fetch's own error.
func ReadModel(ctx context.Context, fetch Fetch, size int64, name string) (catalog.Model, int64, error) {
	bad := func(format string, args ...any) error { return &HeaderError{Reason: fmt.Sprintf(format, args...)} }
	if size < 32 {
		return catalog.Model{}, 0, bad("%d bytes is too small for a GGUF header", size)
	}
	rr := &reader{ctx: ctx, fetch: fetch, size: size, blocks: map[int64][]byte{}}
	if err := guard(rr); err != nil {
		if rr.fetchErr != nil {
			return catalog.Model{}, rr.read, rr.fetchErr
		}
		return catalog.Model{}, rr.read, bad("%v", err)
	}
	if _, err := rr.Seek(0, io.SeekStart); err != nil {
		return catalog.Model{}, rr.read, bad("%v", err)
	}
	f, err := ggml.Decode(rr, 1<<20)
	if err != nil {
		if rr.fetchErr != nil {
			return catalog.Model{}, rr.read, rr.fetchErr
		}
		return catalog.Model{}, rr.read, bad("%v", err)
	}
	kv := f.KV()
	arch := kv.Architecture()
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
		VocabSize:       len(kv.Strings("tokenizer.ggml.tokens")),
	}
	// Ollama gives a model the embedding capability, and not completion, when its header has a pooling type.
	_, m.Embedding = kv[arch+".pooling_type"]
	if arch == "" {
		return catalog.Model{}, rr.read, bad("no general.architecture in the header")
	}
	if err := m.Validate(); err != nil {
		return catalog.Model{}, rr.read, bad("%v", err)
	}
	return m, rr.read, nil
}

// guard walks the header's structure before ollama's decoder does, refusing lengths and counts no real model
// has: the decoder allocates whatever the header claims (a string of 4 GB, a tensor of 4 billion dimensions).
func guard(r io.Reader) error {
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
	if counts.Tensors > maxTensors || counts.KV > maxKV {
		return fmt.Errorf("header claims %d tensors and %d keys; the limits are %d and %d",
			counts.Tensors, counts.KV, maxTensors, maxKV)
	}
	g := walker{r: r}
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
		if dims > maxDims {
			return fmt.Errorf("a tensor claims %d dimensions; at most %d", dims, maxDims)
		}
		if err := g.skip(int64(dims)*8 + 4 + 8); err != nil {
			return err
		}
	}
	return nil
}

type walker struct {
	r   io.Reader
	buf [8]byte
}

func (g *walker) u32() (uint32, error) {
	if _, err := io.ReadFull(g.r, g.buf[:4]); err != nil {
		return 0, fmt.Errorf("truncated header: %w", err)
	}
	return binary.LittleEndian.Uint32(g.buf[:4]), nil
}

func (g *walker) u64() (uint64, error) {
	if _, err := io.ReadFull(g.r, g.buf[:8]); err != nil {
		return 0, fmt.Errorf("truncated header: %w", err)
	}
	return binary.LittleEndian.Uint64(g.buf[:8]), nil
}

func (g *walker) skip(n int64) error {
	if m, err := io.CopyN(io.Discard, g.r, n); err != nil {
		return fmt.Errorf("truncated header after %d of %d bytes: %w", m, n, err)
	}
	return nil
}

func (g *walker) skipString() error {
	n, err := g.u64()
	if err != nil {
		return err
	}
	if n > maxString {
		return fmt.Errorf("a string claims %d bytes; at most %d", n, maxString)
	}
	return g.skip(int64(n))
}

// GGUF value types, as numbered by the format.
var scalarSize = map[uint32]int64{0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

const (
	typeString = 8
	typeArray  = 9
)

func (g *walker) skipValue(t uint32, depth int) error {
	if size, ok := scalarSize[t]; ok {
		return g.skip(size)
	}
	switch t {
	case typeString:
		return g.skipString()
	case typeArray:
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
		if n > maxArray {
			return fmt.Errorf("an array claims %d elements; at most %d", n, maxArray)
		}
		if size, ok := scalarSize[et]; ok {
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
