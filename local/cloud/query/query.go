// Package query parses and evaluates the ECS cluster query language, the language of memberOf placement
// constraints and of ListContainerInstances filters, so the local cloud places tasks by the same expressions the
// planner sends to ECS.
//
// Supported, after the ECS documentation: subjects `attribute:NAME` and the shorthands ec2InstanceType,
// ec2InstanceId, availabilityZone (the ecs.availability-zone attribute), agentConnected and runningTasksCount;
// operators `==` (equals), `!=` (not_equals), `>`, `>=`, `<`, `<=` (numeric when both sides are numbers),
// `in`, `!in` (not_in) with a list in [ ] or ( ), `=~` (matches) and `!~` (not_matches) with a Go regular
// expression that must match the whole value, `exists`, `!exists` (not_exists); combined with `and` (&&),
// `or` (||), `not` (!) and parentheses. Values are bare words or quoted with ' or ".
//
// The parser takes any input without panicking: input length, nesting depth, list length and pattern length are
// bounded, and errors name the byte offset where the problem is.
package query

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
)

// Limits keep hostile or mistaken input cheap to reject. ECS itself caps an expression at 2000 characters.
const (
	MaxLength      = 2000
	MaxDepth       = 32
	MaxListItems   = 100
	MaxPatternSize = 256
	// MaxPatternProgram bounds the compiled size of a =~ pattern.
	MaxPatternProgram = 10000
)

// SyntaxError is an expression that does not parse; Pos is the byte offset of the problem.
type SyntaxError struct {
	Pos int
	Msg string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("cluster query: at offset %d: %s", e.Pos, e.Msg)
}

// Lookup gives the value of a subject for the thing being tested, e.g. "attribute:ecs.instance-type" or
// "ec2InstanceType"; ok is false when the subject is absent.
type Lookup func(subject string) (value string, ok bool)

// Expr is a parsed expression.
type Expr interface {
	// Eval tests the expression against one container instance's subjects.
	Eval(l Lookup) bool
	String() string
}

// Op is a comparison operator, in its symbolic spelling.
type Op string

const (
	OpEq        Op = "=="
	OpNe        Op = "!="
	OpGt        Op = ">"
	OpGe        Op = ">="
	OpLt        Op = "<"
	OpLe        Op = "<="
	OpIn        Op = "in"
	OpNotIn     Op = "!in"
	OpMatch     Op = "=~"
	OpNotMatch  Op = "!~"
	OpExists    Op = "exists"
	OpNotExists Op = "!exists"
	opNone      Op = ""
	attrPrefix     = "attribute:"
)

// wordOps are the named spellings of the operators.
var wordOps = map[string]Op{
	"equals": OpEq, "not_equals": OpNe, "greater_than": OpGt, "greater_than_equal": OpGe,
	"less_than": OpLt, "less_than_equal": OpLe, "in": OpIn, "not_in": OpNotIn, "matches": OpMatch,
	"not_matches": OpNotMatch, "exists": OpExists, "not_exists": OpNotExists,
}

// shorthands map subject names to the attribute they stand for; the rest are answered by Lookup directly.
var shorthands = map[string]string{
	"ec2instancetype":   attrPrefix + "ecs.instance-type",
	"availabilityzone":  attrPrefix + "ecs.availability-zone",
	"ec2instanceid":     "ec2InstanceId",
	"agentconnected":    "agentConnected",
	"runningtaskscount": "runningTasksCount",
}

// Compare is one `subject op value(s)` test.
type Compare struct {
	Subject string // canonical: "attribute:NAME" or a shorthand's name
	Op      Op
	Values  []string // one value, a list for in/!in, none for exists
	re      *regexp.Regexp
}

func (c *Compare) Eval(l Lookup) bool {
	v, ok := l(c.Subject)
	switch c.Op {
	case OpExists:
		return ok
	case OpNotExists:
		return !ok
	}
	if !ok {
		// A missing subject matches only the negative tests, as "is not that value".
		return c.Op == OpNe || c.Op == OpNotIn || c.Op == OpNotMatch
	}
	switch c.Op {
	case OpEq:
		return v == c.Values[0]
	case OpNe:
		return v != c.Values[0]
	case OpIn, OpNotIn:
		found := false
		for _, w := range c.Values {
			found = found || v == w
		}
		return found == (c.Op == OpIn)
	case OpMatch:
		return c.re.MatchString(v)
	case OpNotMatch:
		return !c.re.MatchString(v)
	}
	cmp := strings.Compare(v, c.Values[0])
	if a, err1 := strconv.ParseFloat(v, 64); err1 == nil {
		if b, err2 := strconv.ParseFloat(c.Values[0], 64); err2 == nil {
			cmp = 0
			if a < b {
				cmp = -1
			} else if a > b {
				cmp = 1
			}
		}
	}
	switch c.Op {
	case OpGt:
		return cmp > 0
	case OpGe:
		return cmp >= 0
	case OpLt:
		return cmp < 0
	case OpLe:
		return cmp <= 0
	}
	return false
}

func (c *Compare) String() string {
	switch c.Op {
	case OpExists, OpNotExists:
		return c.Subject + " " + string(c.Op)
	case OpIn, OpNotIn:
		return c.Subject + " " + string(c.Op) + " [" + strings.Join(quoteAll(c.Values), ", ") + "]"
	}
	return c.Subject + " " + string(c.Op) + " " + quote(c.Values[0])
}

// And, Or and Not combine expressions.
type (
	And struct{ L, R Expr }
	Or  struct{ L, R Expr }
	Not struct{ X Expr }
)

func (e *And) Eval(l Lookup) bool { return e.L.Eval(l) && e.R.Eval(l) }
func (e *Or) Eval(l Lookup) bool  { return e.L.Eval(l) || e.R.Eval(l) }
func (e *Not) Eval(l Lookup) bool { return !e.X.Eval(l) }
func (e *And) String() string     { return "(" + e.L.String() + " and " + e.R.String() + ")" }
func (e *Or) String() string      { return "(" + e.L.String() + " or " + e.R.String() + ")" }
func (e *Not) String() string     { return "not(" + e.X.String() + ")" }

// quote prints a value so that it parses back: bare when it can be, else in the quote it does not contain (a
// parsed value never holds both).
func quote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\r\n,()[]'\"") {
		return s
	}
	if strings.Contains(s, "'") {
		return `"` + s + `"`
	}
	return "'" + s + "'"
}

func quoteAll(vs []string) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = quote(v)
	}
	return out
}

// Parse parses an expression. An empty (or all-blank) expression is an error: callers that treat "no filter"
// as "everything" check for that first.
func Parse(src string) (Expr, error) {
	if len(src) > MaxLength {
		return nil, &SyntaxError{Pos: MaxLength, Msg: fmt.Sprintf("expression longer than %d bytes", MaxLength)}
	}
	p := &parser{src: src}
	e, err := p.or(0)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.pos < len(p.src) {
		return nil, p.errf("unexpected %q after a complete expression", p.rest(12))
	}
	return e, nil
}

// Match parses and evaluates in one go: convenient for one-off filters.
func Match(src string, l Lookup) (bool, error) {
	e, err := Parse(src)
	if err != nil {
		return false, err
	}
	return e.Eval(l), nil
}

type parser struct {
	src string
	pos int
}

func (p *parser) errf(format string, args ...any) error {
	return &SyntaxError{Pos: p.pos, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) rest(n int) string {
	r := p.src[p.pos:]
	if len(r) > n {
		r = r[:n] + "..."
	}
	return r
}

func (p *parser) space() {
	for p.pos < len(p.src) && strings.IndexByte(" \t\r\n", p.src[p.pos]) >= 0 {
		p.pos++
	}
}

// keyword consumes kw (case-insensitive) if it stands as a whole word at the cursor.
func (p *parser) keyword(kw string) bool {
	p.space()
	end := p.pos + len(kw)
	if end > len(p.src) || !strings.EqualFold(p.src[p.pos:end], kw) {
		return false
	}
	if end < len(p.src) && isWordByte(p.src[end]) {
		return false
	}
	p.pos = end
	return true
}

// symbol consumes s if it is next.
func (p *parser) symbol(s string) bool {
	p.space()
	if strings.HasPrefix(p.src[p.pos:], s) {
		p.pos += len(s)
		return true
	}
	return false
}

func isWordByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_'
}

func (p *parser) or(depth int) (Expr, error) {
	l, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for p.keyword("or") || p.symbol("||") {
		r, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		l = &Or{l, r}
	}
	return l, nil
}

func (p *parser) and(depth int) (Expr, error) {
	l, err := p.unary(depth)
	if err != nil {
		return nil, err
	}
	for p.keyword("and") || p.symbol("&&") {
		r, err := p.unary(depth)
		if err != nil {
			return nil, err
		}
		l = &And{l, r}
	}
	return l, nil
}

func (p *parser) unary(depth int) (Expr, error) {
	p.space()
	if depth >= MaxDepth {
		return nil, p.errf("nested deeper than %d levels", MaxDepth)
	}
	if p.keyword("not") || p.symbol("!") {
		x, err := p.unary(depth + 1)
		if err != nil {
			return nil, err
		}
		return &Not{x}, nil
	}
	if p.symbol("(") {
		e, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if !p.symbol(")") {
			return nil, p.errf("expected ) to close the parenthesis")
		}
		return e, nil
	}
	return p.compare()
}

func (p *parser) compare() (Expr, error) {
	p.space()
	start := p.pos
	subject := p.word()
	if subject == "" {
		if p.pos >= len(p.src) {
			return nil, p.errf("expected a subject such as attribute:ecs.instance-type, found the end")
		}
		return nil, p.errf("expected a subject such as attribute:ecs.instance-type, found %q", p.rest(12))
	}
	switch {
	case strings.HasPrefix(strings.ToLower(subject), attrPrefix):
		name := subject[len(attrPrefix):]
		if name == "" {
			return nil, &SyntaxError{Pos: start + len(attrPrefix), Msg: "attribute: needs a name"}
		}
		subject = attrPrefix + name
	case shorthands[strings.ToLower(subject)] != "":
		subject = shorthands[strings.ToLower(subject)]
	default:
		return nil, &SyntaxError{Pos: start, Msg: fmt.Sprintf("unknown subject %q (want attribute:NAME, ec2InstanceType, ec2InstanceId, availabilityZone, agentConnected or runningTasksCount)", subject)}
	}
	opPos := p.skipSpace()
	op := p.op()
	if op == opNone {
		return nil, &SyntaxError{Pos: opPos, Msg: fmt.Sprintf("expected an operator after %s, found %q", subject, p.rest(12))}
	}
	c := &Compare{Subject: subject, Op: op}
	switch op {
	case OpExists, OpNotExists:
		return c, nil
	case OpIn, OpNotIn:
		vs, err := p.list()
		if err != nil {
			return nil, err
		}
		c.Values = vs
		return c, nil
	}
	valPos := p.skipSpace()
	var v string
	var err error
	if op == OpMatch || op == OpNotMatch {
		v, err = p.pattern()
	} else {
		v, err = p.value()
	}
	if err != nil {
		return nil, err
	}
	c.Values = []string{v}
	if op == OpMatch || op == OpNotMatch {
		if len(v) > MaxPatternSize {
			return nil, &SyntaxError{Pos: valPos, Msg: fmt.Sprintf("pattern longer than %d bytes", MaxPatternSize)}
		}
		re, rerr := compilePattern(v)
		if rerr != nil {
			return nil, &SyntaxError{Pos: valPos, Msg: "bad pattern: " + rerr.Error()}
		}
		c.re = re
	}
	return c, nil
}

// compilePattern compiles a whole-value pattern, refusing ones whose program is large: a short pattern with
// nested counted repeats (`((a{99}){99}){99}`) compiles to millions of instructions and is slow to build and run.
func compilePattern(pat string) (*regexp.Regexp, error) {
	full := "^(?:" + pat + ")$"
	tree, err := syntax.Parse(full, syntax.Perl)
	if err != nil {
		return nil, err
	}
	if n := tree.MaxCap(); n > 100 {
		return nil, fmt.Errorf("%d capture groups", n)
	}
	if size := progSize(tree, 0); size > MaxPatternProgram {
		return nil, fmt.Errorf("pattern too complex (more than %d instructions)", MaxPatternProgram)
	}
	return regexp.Compile(full)
}

// progSize estimates the instructions a parsed, not yet simplified pattern compiles to, stopping once past the
// cap (Simplify itself expands counted repeats, so it is as slow as compiling).
func progSize(re *syntax.Regexp, depth int) int {
	if depth > 1000 {
		return MaxPatternProgram + 1
	}
	n := 1 + len(re.Rune)
	for _, sub := range re.Sub {
		n += progSize(sub, depth+1)
		if n > MaxPatternProgram {
			return n
		}
	}
	if re.Op == syntax.OpRepeat {
		// x{min,max} compiles to max copies of x (min when unbounded); multiply before the regexp package does.
		times := max(re.Min, re.Max, 1)
		if n > MaxPatternProgram/times {
			return MaxPatternProgram + 1
		}
		n *= times
	}
	return n
}

func (p *parser) skipSpace() int { p.space(); return p.pos }

// word reads a subject: letters, digits and . _ - : / until anything else.
func (p *parser) word() string {
	start := p.pos
	for p.pos < len(p.src) && (isWordByte(p.src[p.pos]) || strings.IndexByte(".-:/", p.src[p.pos]) >= 0) {
		p.pos++
	}
	return p.src[start:p.pos]
}

func (p *parser) op() Op {
	p.space()
	for _, s := range []Op{OpEq, OpNe, OpGe, OpLe, OpMatch, OpNotMatch, OpGt, OpLt} {
		if p.symbol(string(s)) {
			return s
		}
	}
	for _, s := range []string{"!exists", "!in"} {
		end := p.pos + len(s)
		if end <= len(p.src) && strings.EqualFold(p.src[p.pos:end], s) && (end == len(p.src) || !isWordByte(p.src[end])) {
			p.pos = end
			return Op(s)
		}
	}
	start := p.pos
	w := strings.ToLower(p.word())
	if op, ok := wordOps[w]; ok {
		return op
	}
	p.pos = start
	return opNone
}

// value reads one bare or quoted value.
func (p *parser) value() (string, error) {
	p.space()
	if p.pos >= len(p.src) {
		return "", p.errf("expected a value, found the end")
	}
	if q := p.src[p.pos]; q == '\'' || q == '"' {
		return p.quoted()
	}
	start := p.pos
	for p.pos < len(p.src) && strings.IndexByte(" \t\r\n,()[]'\"", p.src[p.pos]) < 0 {
		p.pos++
	}
	if p.pos == start {
		return "", p.errf("expected a value, found %q", p.rest(12))
	}
	return p.src[start:p.pos], nil
}

func (p *parser) quoted() (string, error) {
	start := p.pos
	q := p.src[p.pos]
	end := strings.IndexByte(p.src[p.pos+1:], q)
	if end < 0 {
		return "", &SyntaxError{Pos: start, Msg: "unterminated quoted value"}
	}
	p.pos += end + 2
	return p.src[start+1 : start+1+end], nil
}

// pattern reads a regular expression: quoted, or bare up to a blank or an unbalanced ')' so that
// `(attribute:x =~ g(4dn|5)\..*)` works.
func (p *parser) pattern() (string, error) {
	p.space()
	if p.pos < len(p.src) && (p.src[p.pos] == '\'' || p.src[p.pos] == '"') {
		return p.quoted()
	}
	start, depth := p.pos, 0
loop:
	for p.pos < len(p.src) {
		switch c := p.src[p.pos]; {
		case c == '\\' && p.pos+1 < len(p.src):
			p.pos++
		case c == '\'' || c == '"':
			return "", p.errf("quote inside a bare pattern: quote the whole pattern instead")
		case c == '(' || c == '[':
			depth++
		case c == ')' || c == ']':
			if depth == 0 {
				break loop
			}
			depth--
		case depth == 0 && strings.IndexByte(" \t\r\n", c) >= 0:
			break loop
		}
		p.pos++
	}
	if p.pos == start {
		return "", p.errf("expected a pattern, found %q", p.rest(12))
	}
	return p.src[start:p.pos], nil
}

// list reads [a, b] or (a, b).
func (p *parser) list() ([]string, error) {
	p.space()
	var closer string
	switch {
	case p.symbol("["):
		closer = "]"
	case p.symbol("("):
		closer = ")"
	default:
		return nil, p.errf("expected a list like [a, b] after in")
	}
	var vs []string
	for {
		if at := p.skipSpace(); len(vs) == 0 && p.symbol(closer) {
			return nil, &SyntaxError{Pos: at, Msg: "empty list"}
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		if vs = append(vs, v); len(vs) > MaxListItems {
			return nil, p.errf("list longer than %d items", MaxListItems)
		}
		if p.symbol(closer) {
			return vs, nil
		}
		if !p.symbol(",") {
			return nil, p.errf("expected , or %s in the list", closer)
		}
	}
}
