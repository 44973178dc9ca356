package prices

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// object is a JSON object with its members in file order, each value kept as written: rewriting the data file
// replaces the price members and leaves every other member (known to the catalog or not) as it was.
type object []member

type member struct {
	Key   string
	Value json.RawMessage
}

func parseObject(raw []byte) (object, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("want a JSON object, got %v", tok)
	}
	var o object
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key := tok.(string) // inside an object the decoder only yields string keys here
		if seen[key] {
			return nil, fmt.Errorf("member %q appears twice", key)
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("member %q: %w", key, err)
		}
		o = append(o, member{key, v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data after the JSON object")
	}
	return o, nil
}

func (o object) get(key string) (json.RawMessage, bool) {
	for _, m := range o {
		if m.Key == key {
			return m.Value, true
		}
	}
	return nil, false
}

// set replaces a member's value, or appends the member when the object lacks it.
func (o *object) set(key string, v json.RawMessage) {
	for i := range *o {
		if (*o)[i].Key == key {
			(*o)[i].Value = v
			return
		}
	}
	*o = append(*o, member{key, v})
}

func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(quote(m.Key))
		b.WriteByte(':')
		b.Write(m.Value)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// number is a price or a fraction as the file writes it: rounded to the given decimals, without trailing zeros.
func number(v float64, decimals int) json.RawMessage {
	p := math.Pow10(decimals)
	return json.RawMessage(strconv.FormatFloat(math.Round(v*p)/p, 'f', -1, 64))
}

func str(s string) json.RawMessage { return quote(s) }

// quote is a JSON string as people write it: no \u escapes for <, > and &.
func quote(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // encoding a string cannot fail
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// render writes the document in the data files' layout: one top-level member a line; an object member (fargate)
// opened with one member a line; an array of objects (instanceTypes, sizes) with one object a line; everything
// else on one line, with a space after each colon and comma.
func render(doc object) ([]byte, error) {
	var b bytes.Buffer
	if err := renderObject(&b, doc, "", true); err != nil {
		return nil, err
	}
	b.WriteByte('\n')
	return b.Bytes(), nil
}

func renderObject(b *bytes.Buffer, o object, indent string, open bool) error {
	b.WriteString("{\n")
	for i, m := range o {
		b.WriteString(indent + "  ")
		b.Write(quote(m.Key))
		b.WriteString(": ")
		if err := renderValue(b, m.Value, indent+"  ", open); err != nil {
			return fmt.Errorf("%s: %w", m.Key, err)
		}
		if i < len(o)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString(indent + "}")
	return nil
}

func renderValue(b *bytes.Buffer, v json.RawMessage, indent string, openObjects bool) error {
	v = bytes.TrimSpace(v)
	switch {
	case openObjects && len(v) > 0 && v[0] == '{':
		o, err := parseObject(v)
		if err != nil {
			return err
		}
		return renderObject(b, o, indent, false)
	case len(v) > 0 && v[0] == '[':
		var elems []json.RawMessage
		if err := json.Unmarshal(v, &elems); err != nil {
			return err
		}
		allObjects := len(elems) > 0
		for _, e := range elems {
			e = bytes.TrimSpace(e)
			allObjects = allObjects && len(e) > 0 && e[0] == '{'
		}
		if !allObjects {
			return inline(b, v)
		}
		b.WriteString("[\n")
		for i, e := range elems {
			b.WriteString(indent + "  ")
			if err := inline(b, e); err != nil {
				return err
			}
			if i < len(elems)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		b.WriteString(indent + "]")
		return nil
	}
	return inline(b, v)
}

// inline writes a JSON value on one line, numbers as written.
func inline(b *bytes.Buffer, v json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	return inlineNext(b, dec)
}

func inlineNext(b *bytes.Buffer, dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		closing := map[json.Delim]byte{'{': '}', '[': ']'}[t]
		b.WriteByte(byte(t))
		for first := true; dec.More(); first = false {
			if !first {
				b.WriteString(", ")
			}
			if t == '{' {
				key, err := dec.Token()
				if err != nil {
					return err
				}
				b.Write(quote(key.(string)))
				b.WriteString(": ")
			}
			if err := inlineNext(b, dec); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil {
			return err
		}
		b.WriteByte(closing)
	case string:
		b.Write(quote(t))
	case json.Number:
		b.WriteString(t.String())
	case bool:
		b.WriteString(strconv.FormatBool(t))
	case nil:
		b.WriteString("null")
	default:
		return fmt.Errorf("unexpected JSON token %v", tok)
	}
	return nil
}

// floatOf reads a member's number, for reporting what changed; a missing or non-numeric value is NaN.
func floatOf(o object, key string) float64 {
	v, ok := o.get(key)
	if !ok {
		return math.NaN()
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(string(v)), 64)
	if err != nil {
		return math.NaN()
	}
	return f
}
