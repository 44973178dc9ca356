package tinymodel

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ollama/ollama/fs/ggml"
)

func decodeFile(t *testing.T, path string) *ggml.GGML {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// -1 keeps every array (the vocabulary) in the decoded KV.
	g, err := ggml.Decode(f, -1)
	if err != nil {
		t.Fatalf("ggml.Decode(%s): %v", path, err)
	}
	return g
}

func TestWriteFileRoundTripsThroughOllamaDecoder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := WriteFile(path); err != nil {
		t.Fatal(err)
	}
	g := decodeFile(t, path)
	kv := g.KV()

	wantParams, err := Options{}.ParameterCount()
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Architecture", kv.Architecture(), "llama"},
		{"BlockCount", kv.BlockCount(), uint64(2)},
		{"EmbeddingLength", kv.EmbeddingLength(), uint64(64)},
		{"HeadCountMax", kv.HeadCountMax(), uint64(4)},
		{"HeadCountKVMax", kv.HeadCountKVMax(), uint64(2)},
		{"EmbeddingHeadCountK", kv.EmbeddingHeadCountK(), uint64(16)},
		{"ContextLength", kv.ContextLength(), uint64(2048)},
		{"ParameterCount", kv.ParameterCount(), wantParams},
		{"FileType", kv.FileType().String(), "F16"},
		{"general.name", kv.String("general.name"), "tinyllama"},
		{"tokenizer.ggml.model", kv.String("tokenizer.ggml.model"), "llama"},
		{"tokenizer.ggml.bos_token_id", kv.Uint("tokenizer.ggml.bos_token_id"), uint32(BOSTokenID)},
		{"tokenizer.ggml.eos_token_id", kv.Uint("tokenizer.ggml.eos_token_id"), uint32(EOSTokenID)},
		{"len(tokens)", len(kv.Strings("tokenizer.ggml.tokens")), 300},
		{"len(scores)", len(kv.Floats("tokenizer.ggml.scores")), 300},
		{"len(token_type)", len(kv.Ints("tokenizer.ggml.token_type")), 300},
		{"tensors", len(g.Tensors().Items()), 3 + 2*9},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v (%T), want %v (%T)", c.name, c.got, c.got, c.want, c.want)
		}
	}

	// Decode recomputes general.parameter_count from the tensor shapes, so
	// equality above also proves the shapes add up to what we declared.
	if wantParams < 100_000 || wantParams > 200_000 {
		t.Errorf("parameter count %d: not the ~0.11 M of 2 layers of width 64 with 300 tokens", wantParams)
	}

	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 1<<20 {
		t.Errorf("file is %d bytes, want under 1 MiB", st.Size())
	}
	var dataSize uint64
	for _, tensor := range g.Tensors().Items() {
		dataSize += tensor.Size()
	}
	if g.Tensors().Offset+dataSize > uint64(st.Size()) {
		t.Errorf("tensor data (offset %d + %d bytes) runs past the file end (%d)", g.Tensors().Offset, dataSize, st.Size())
	}
}

func TestVocabularyHasNoDuplicates(t *testing.T) {
	for _, size := range []int{minVocabSize, 300, 1000, 5000} {
		tokens, err := Vocabulary(size)
		if err != nil {
			t.Fatal(err)
		}
		if len(tokens) != size {
			t.Fatalf("Vocabulary(%d) has %d tokens", size, len(tokens))
		}
		seen := make(map[string]int, size)
		for i, tok := range tokens {
			if j, dup := seen[tok]; dup {
				t.Fatalf("Vocabulary(%d): token %q at %d and %d", size, tok, j, i)
			}
			seen[tok] = i
		}
		// llama.cpp looks these up by name when it loads a SentencePiece vocabulary.
		for _, must := range []string{"<unk>", "<s>", "</s>", "<0x0A>", "<0xFF>"} {
			if _, ok := seen[must]; !ok {
				t.Errorf("Vocabulary(%d) lacks %q", size, must)
			}
		}
	}
}

func TestWriteIsDeterministic(t *testing.T) {
	a, err := Bytes(Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Bytes(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two writes with the same options differ")
	}
	c, err := Bytes(Options{Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(c) != len(a) || bytes.Equal(a, c) {
		t.Fatalf("a different seed should change the weights only: len %d vs %d, equal=%v", len(c), len(a), bytes.Equal(a, c))
	}
}

func TestWriteHonoursOptions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "custom.gguf")
	opts := Options{Name: "custom", BlockCount: 3, EmbeddingLength: 96, HeadCount: 6, HeadCountKV: 3, VocabSize: 400, ContextLength: 512}
	if err := Write(path, opts); err != nil {
		t.Fatal(err)
	}
	kv := decodeFile(t, path).KV()
	if kv.BlockCount() != 3 || kv.EmbeddingLength() != 96 || kv.HeadCountMax() != 6 || kv.HeadCountKVMax() != 3 ||
		kv.ContextLength() != 512 || len(kv.Strings("tokenizer.ggml.tokens")) != 400 || kv.String("general.name") != "custom" {
		t.Fatalf("decoded KV does not match %+v: blocks=%d width=%d heads=%d kv=%d ctx=%d vocab=%d name=%q",
			opts, kv.BlockCount(), kv.EmbeddingLength(), kv.HeadCountMax(), kv.HeadCountKVMax(), kv.ContextLength(),
			len(kv.Strings("tokenizer.ggml.tokens")), kv.String("general.name"))
	}
}

func TestWriteRejectsInvalidOptions(t *testing.T) {
	cases := []struct {
		opts  Options
		field string
	}{
		{Options{VocabSize: 10}, "VocabSize"},
		{Options{EmbeddingLength: 64, HeadCount: 5}, "HeadCount"},
		{Options{EmbeddingLength: 12, HeadCount: 4}, "HeadCount"}, // odd head size
		{Options{HeadCount: 4, HeadCountKV: 3}, "HeadCountKV"},
		{Options{BlockCount: -1}, "BlockCount"},
	}
	for _, c := range cases {
		path := filepath.Join(t.TempDir(), "bad.gguf")
		err := Write(path, c.opts)
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Field != c.field {
			t.Errorf("Write(%+v) = %v, want an OptionError on %s", c.opts, err, c.field)
		}
		if _, statErr := os.Stat(path); !errors.Is(statErr, os.ErrNotExist) {
			t.Errorf("Write(%+v) left a file behind", c.opts)
		}
	}
}
