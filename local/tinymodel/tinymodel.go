// Package tinymodel writes a tiny but valid llama-architecture GGUF model.
//
// Local mode and the tests need a model that a real `ollama serve` accepts,
// loads and generates from in milliseconds, without downloading anything. The
// file is produced with Ollama's own GGUF writer (fs/ggml.WriteGGUF), so what
// the server parses is exactly what Ollama itself would write; it carries the
// metadata the project's sizing code reads (architecture, block count, widths,
// head counts, context length, parameter count) and a SentencePiece vocabulary
// with byte fallback, so any prompt tokenizes.
//
// The weights are pseudo-random from a fixed seed: the same Options always give
// the same bytes, and the output is gibberish by design. Assert on token counts
// and done reasons, never on generated text.
package tinymodel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/ollama/ollama/fs/ggml"
	"github.com/x448/float16"
)

// Architecture is the general.architecture of every model this package writes.
const Architecture = "llama"

// Special token ids in the vocabulary, the llama (SentencePiece) convention.
const (
	UnknownTokenID = 0
	BOSTokenID     = 1
	EOSTokenID     = 2
	// firstByteTokenID is the id of <0x00>; the 256 byte tokens follow it.
	firstByteTokenID = 3
	// minVocabSize is the special tokens, the 256 byte tokens and at least
	// one normal token.
	minVocabSize = firstByteTokenID + 256 + 1
	// maxVocabSize keeps a typo from producing a huge file.
	maxVocabSize = 1 << 16
)

// Token types as llama.cpp defines them (llama_token_type).
const (
	tokenTypeNormal  int32 = 1
	tokenTypeUnknown int32 = 2
	tokenTypeControl int32 = 3
	tokenTypeByte    int32 = 6
)

// Options shape the model. A zero field takes the default shown beside it.
type Options struct {
	Name              string // general.name; default "tinyllama"
	BlockCount        int    // transformer layers; default 2
	EmbeddingLength   int    // model width; default 64
	FeedForwardLength int    // hidden width of each FFN; default 128
	HeadCount         int    // attention heads; default 4
	HeadCountKV       int    // key/value heads (grouped-query attention); default 2
	VocabSize         int    // tokens, at least 260; default 300
	ContextLength     int    // training context length; default 2048
	Seed              uint64 // seed of the pseudo-random weights; default 1
	// PoolingType, when set (1 mean, 2 cls, 3 last), writes llama.pooling_type: Ollama then treats the model as
	// an embedding model, which embeds and cannot generate.
	PoolingType int
}

// OptionError reports an Options field that cannot make a valid model.
type OptionError struct {
	Field  string // the Options field
	Value  int    // its value after defaults
	Reason string // what a valid value looks like
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("tinymodel: %s=%d: %s", e.Field, e.Value, e.Reason)
}

// withDefaults returns o with every zero field replaced by its default and
// checks that the shape is one llama.cpp accepts.
func (o Options) withDefaults() (Options, error) {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if o.Name == "" {
		o.Name = "tinyllama"
	}
	def(&o.BlockCount, 2)
	def(&o.EmbeddingLength, 64)
	def(&o.FeedForwardLength, 128)
	def(&o.HeadCount, 4)
	def(&o.HeadCountKV, 2)
	def(&o.VocabSize, 300)
	def(&o.ContextLength, 2048)
	if o.Seed == 0 {
		o.Seed = 1
	}

	positive := []struct {
		name string
		v    int
	}{
		{"BlockCount", o.BlockCount},
		{"EmbeddingLength", o.EmbeddingLength},
		{"FeedForwardLength", o.FeedForwardLength},
		{"HeadCount", o.HeadCount},
		{"HeadCountKV", o.HeadCountKV},
		{"ContextLength", o.ContextLength},
	}
	for _, p := range positive {
		if p.v < 0 {
			return o, &OptionError{Field: p.name, Value: p.v, Reason: "must be positive"}
		}
	}
	switch {
	case o.VocabSize < minVocabSize || o.VocabSize > maxVocabSize:
		return o, &OptionError{Field: "VocabSize", Value: o.VocabSize,
			Reason: fmt.Sprintf("must be between %d and %d (3 special tokens, 256 byte tokens, then normal tokens)", minVocabSize, maxVocabSize)}
	case o.EmbeddingLength%o.HeadCount != 0:
		return o, &OptionError{Field: "HeadCount", Value: o.HeadCount, Reason: "must divide EmbeddingLength"}
	case (o.EmbeddingLength/o.HeadCount)%2 != 0:
		return o, &OptionError{Field: "HeadCount", Value: o.HeadCount, Reason: "EmbeddingLength/HeadCount (the head size) must be even for rotary embeddings"}
	case o.HeadCount%o.HeadCountKV != 0:
		return o, &OptionError{Field: "HeadCountKV", Value: o.HeadCountKV, Reason: "must divide HeadCount"}
	}
	return o, nil
}

// headDim is the size of one attention head.
func (o Options) headDim() int { return o.EmbeddingLength / o.HeadCount }

// tensorSpec names one tensor and its shape in ggml order (ne0 first, i.e. the
// input dimension of a weight matrix first).
type tensorSpec struct {
	name  string
	shape []uint64
	ones  bool // a norm weight: all 1.0 rather than random
}

// tensors lists the llama tensors for o, in a fixed order.
func (o Options) tensors() []tensorSpec {
	n := uint64(o.EmbeddingLength)
	kv := uint64(o.HeadCountKV * o.headDim())
	ff := uint64(o.FeedForwardLength)
	vocab := uint64(o.VocabSize)

	specs := []tensorSpec{
		{name: "token_embd.weight", shape: []uint64{n, vocab}},
		{name: "output_norm.weight", shape: []uint64{n}, ones: true},
		{name: "output.weight", shape: []uint64{n, vocab}},
	}
	for i := range o.BlockCount {
		blk := func(s string) string { return fmt.Sprintf("blk.%d.%s.weight", i, s) }
		specs = append(specs,
			tensorSpec{name: blk("attn_norm"), shape: []uint64{n}, ones: true},
			tensorSpec{name: blk("attn_q"), shape: []uint64{n, n}},
			tensorSpec{name: blk("attn_k"), shape: []uint64{n, kv}},
			tensorSpec{name: blk("attn_v"), shape: []uint64{n, kv}},
			tensorSpec{name: blk("attn_output"), shape: []uint64{n, n}},
			tensorSpec{name: blk("ffn_norm"), shape: []uint64{n}, ones: true},
			tensorSpec{name: blk("ffn_gate"), shape: []uint64{n, ff}},
			tensorSpec{name: blk("ffn_up"), shape: []uint64{n, ff}},
			tensorSpec{name: blk("ffn_down"), shape: []uint64{ff, n}},
		)
	}
	return specs
}

// ParameterCount is the number of weights in the model o describes (after
// defaults), the value written as general.parameter_count.
func (o Options) ParameterCount() (uint64, error) {
	o, err := o.withDefaults()
	if err != nil {
		return 0, err
	}
	return o.parameterCount(), nil
}

func (o Options) parameterCount() uint64 {
	var total uint64
	for _, t := range o.tensors() {
		total += elements(t.shape)
	}
	return total
}

func elements(shape []uint64) uint64 {
	n := uint64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// Vocabulary returns the tokens of a vocabulary of the given size, every one
// distinct: llama.cpp aborts the whole server on a duplicate token.
func Vocabulary(size int) ([]string, error) {
	if size < minVocabSize || size > maxVocabSize {
		return nil, &OptionError{Field: "VocabSize", Value: size,
			Reason: fmt.Sprintf("must be between %d and %d", minVocabSize, maxVocabSize)}
	}
	tokens, _, _ := vocabulary(size)
	return tokens, nil
}

// vocabulary builds tokens, their SentencePiece scores and their types:
// <unk>, <s>, </s>, the 256 byte-fallback tokens, then "▁" followed by short
// letter sequences with and without the word-start marker, so plain English
// words tokenize into more than single bytes.
func vocabulary(size int) (tokens []string, scores []float32, types []int32) {
	tokens = make([]string, 0, size)
	scores = make([]float32, 0, size)
	types = make([]int32, 0, size)
	add := func(tok string, score float32, typ int32) {
		tokens = append(tokens, tok)
		scores = append(scores, score)
		types = append(types, typ)
	}

	add("<unk>", 0, tokenTypeUnknown)
	add("<s>", 0, tokenTypeControl)
	add("</s>", 0, tokenTypeControl)
	for b := range 256 {
		add(fmt.Sprintf("<0x%02X>", b), 0, tokenTypeByte)
	}

	const wordStart = "\u2581" // SentencePiece's marker for a preceding space
	add(wordStart, -1, tokenTypeNormal)
	// Letter sequences in shortlex order ("a".."z", "aa".."zz", ...), each
	// emitted bare and then with the word-start marker. Shortlex order never
	// repeats a sequence, and the marker makes the two forms distinct.
	for length := 1; len(tokens) < size; length++ {
		seq := make([]byte, length)
		for i := range seq {
			seq[i] = 'a'
		}
		for {
			for _, tok := range []string{string(seq), wordStart + string(seq)} {
				if len(tokens) == size {
					return tokens, scores, types
				}
				add(tok, -float32(len(tokens)), tokenTypeNormal)
			}
			if !nextSequence(seq) {
				break
			}
		}
	}
	return tokens, scores, types
}

// nextSequence advances seq to the next sequence of lowercase letters of the
// same length, reporting false when seq was the last ("zz...z").
func nextSequence(seq []byte) bool {
	for i := len(seq) - 1; i >= 0; i-- {
		if seq[i] < 'z' {
			seq[i]++
			return true
		}
		seq[i] = 'a'
	}
	return false
}

// kv is the GGUF metadata for o.
func (o Options) kv() ggml.KV {
	tokens, scores, types := vocabulary(o.VocabSize)
	kv := ggml.KV{
		"general.architecture":                   Architecture,
		"general.name":                           o.Name,
		"general.file_type":                      uint32(ggml.FileTypeF16),
		"general.parameter_count":                o.parameterCount(),
		"llama.block_count":                      uint32(o.BlockCount),
		"llama.context_length":                   uint32(o.ContextLength),
		"llama.embedding_length":                 uint32(o.EmbeddingLength),
		"llama.feed_forward_length":              uint32(o.FeedForwardLength),
		"llama.attention.head_count":             uint32(o.HeadCount),
		"llama.attention.head_count_kv":          uint32(o.HeadCountKV),
		"llama.attention.layer_norm_rms_epsilon": float32(1e-5),
		"llama.rope.dimension_count":             uint32(o.headDim()),
		"llama.rope.freq_base":                   float32(10000),
		"llama.vocab_size":                       uint32(o.VocabSize),
		"tokenizer.ggml.model":                   "llama",
		"tokenizer.ggml.tokens":                  tokens,
		"tokenizer.ggml.scores":                  scores,
		"tokenizer.ggml.token_type":              types,
		"tokenizer.ggml.bos_token_id":            uint32(BOSTokenID),
		"tokenizer.ggml.eos_token_id":            uint32(EOSTokenID),
		"tokenizer.ggml.unknown_token_id":        uint32(UnknownTokenID),
		"tokenizer.ggml.add_bos_token":           true,
		"tokenizer.ggml.add_eos_token":           false,
	}
	if o.PoolingType > 0 {
		kv["llama.pooling_type"] = uint32(o.PoolingType)
	}
	return kv
}

// splitMix64 is a tiny generator with a fixed, documented algorithm, so the
// weights (and thus the file bytes) never change with the Go release.
type splitMix64 uint64

func (s *splitMix64) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// kind is the tensor type: F32 for norm weights (llama.cpp keeps those in
// full precision), F16 for the matrices, as a converted llama model has them.
func (t tensorSpec) kind() ggml.TensorType {
	if t.ones {
		return ggml.TensorTypeF32
	}
	return ggml.TensorTypeF16
}

// data returns the little-endian bytes of a tensor: F32 ones for norms,
// otherwise F16 values uniform in ±1/sqrt(fan-in), which keeps activations
// finite.
func (t tensorSpec) data(rng *splitMix64) []byte {
	n := elements(t.shape)
	if t.ones {
		out := make([]byte, 0, 4*n)
		for range n {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(1))
		}
		return out
	}
	out := make([]byte, 0, 2*n)
	scale := float32(1 / math.Sqrt(float64(t.shape[0])))
	for range n {
		// 24 random bits give a float in [0, 1) exactly.
		u := float32(rng.next()>>40) / (1 << 24)
		out = binary.LittleEndian.AppendUint16(out, float16.Fromfloat32((2*u-1)*scale).Bits())
	}
	return out
}

// Write writes the model o describes to path, atomically: the file appears
// complete or not at all.
func Write(path string, o Options) error {
	o, err := o.withDefaults()
	if err != nil {
		return err
	}

	specs := o.tensors()
	rng := splitMix64(o.Seed)
	tensors := make([]*ggml.Tensor, 0, len(specs))
	for _, s := range specs {
		tensors = append(tensors, &ggml.Tensor{
			Name:     s.name,
			Kind:     uint32(s.kind()),
			Shape:    s.shape,
			WriterTo: bytes.NewReader(s.data(&rng)),
		})
	}

	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("tinymodel: create temp file for %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed

	if err := ggml.WriteGGUF(tmp, o.kv(), tensors); err != nil {
		tmp.Close()
		return fmt.Errorf("tinymodel: write GGUF %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("tinymodel: close %s: %w", tmp.Name(), err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("tinymodel: chmod %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("tinymodel: rename into %s: %w", path, err)
	}
	return nil
}

// WriteFile writes the default tiny model (2 layers, width 64, 300 tokens) to
// path.
func WriteFile(path string) error {
	return Write(path, Options{})
}

// Bytes returns the GGUF bytes of the model o describes, for callers that
// upload it somewhere (an S3 emulator, an HTTP test server) rather than keep
// a file. It goes through a temporary file because WriteGGUF needs one.
func Bytes(o Options) ([]byte, error) {
	dir, err := os.MkdirTemp("", "tinymodel-")
	if err != nil {
		return nil, fmt.Errorf("tinymodel: temp dir: %w", err)
	}
	defer os.RemoveAll(dir)

	path := filepath.Join(dir, "model.gguf")
	if err := Write(path, o); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tinymodel: read back %s: %w", path, err)
	}
	return b, nil
}
