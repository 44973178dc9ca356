package query

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// g4dn is one container instance's subjects.
func g4dn(subject string) (string, bool) {
	v, ok := map[string]string{
		"attribute:ecs.instance-type":     "g4dn.xlarge",
		"attribute:ecs.availability-zone": "us-east-1a",
		"attribute:gpu":                   "t4",
		"runningTasksCount":               "3",
		"agentConnected":                  "true",
	}[subject]
	return v, ok
}

func TestEval(t *testing.T) {
	cases := []struct {
		expr string
		want bool
	}{
		{"attribute:ecs.instance-type == g4dn.xlarge", true},
		{"attribute:ecs.instance-type == g5.xlarge", false},
		{"attribute:ecs.instance-type != g5.xlarge", true},
		{"attribute:ecs.instance-type equals g4dn.xlarge", true},
		{"ec2InstanceType == g4dn.xlarge", true},
		{"availabilityZone == us-east-1a", true},
		{"attribute:ecs.instance-type in (g5.xlarge, g4dn.xlarge)", true},
		{"attribute:ecs.instance-type in ['g5.xlarge', \"g4dn.xlarge\"]", true},
		{"attribute:ecs.instance-type in [g5.xlarge]", false},
		{"attribute:ecs.instance-type not_in [g5.xlarge]", true},
		{"attribute:ecs.instance-type !in [g4dn.xlarge]", false},
		{"attribute:ecs.instance-type =~ g4dn.*", true},
		{"attribute:ecs.instance-type =~ g4", false}, // the pattern matches the whole value
		{"attribute:ecs.instance-type =~ g(4dn|5)\\..*", true},
		{"(attribute:ecs.instance-type =~ g(4dn|5)\\..*)", true},
		{"attribute:ecs.instance-type !~ p3.*", true},
		{"attribute:gpu exists", true},
		{"attribute:missing exists", false},
		{"attribute:missing !exists", true},
		{"attribute:missing == x", false},
		{"attribute:missing != x", true},
		{"runningTasksCount < 10", true}, // numeric, not "3" > "1"
		{"runningTasksCount >= 3 and runningTasksCount <= 3", true},
		{"attribute:gpu == t4 and attribute:ecs.instance-type == g5.xlarge", false},
		{"attribute:gpu == t4 && attribute:ecs.instance-type == g5.xlarge || agentConnected == true", true},
		{"attribute:gpu == a10g or attribute:ecs.instance-type == g4dn.xlarge", true},
		{"not attribute:gpu == t4", false},
		{"not(attribute:gpu == t4)", false},
		{"!(attribute:gpu == a10g)", true},
		{"attribute:gpu == a10g or attribute:gpu == t4 and attribute:ecs.availability-zone == eu-west-1a", false}, // and binds tighter
		{"(attribute:gpu == a10g or attribute:gpu == t4) and attribute:ecs.availability-zone == us-east-1a", true},
		{"  AND_x == 1 or attribute:gpu == t4 ", false}, // unknown subject: error below, never true
	}
	for _, c := range cases {
		t.Run(c.expr, func(t *testing.T) {
			got, err := Match(c.expr, g4dn)
			if strings.Contains(c.expr, "AND_x") {
				if err == nil {
					t.Fatalf("Match(%q): want an unknown subject error", c.expr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Match(%q): %v", c.expr, err)
			}
			if got != c.want {
				t.Fatalf("Match(%q) = %v, want %v", c.expr, got, c.want)
			}
		})
	}
}

func TestSyntaxErrors(t *testing.T) {
	cases := []struct {
		expr string
		pos  int
		msg  string
	}{
		{"", 0, "expected a subject"},
		{"attribute:ecs.instance-type", 27, "expected an operator"},
		{"attribute:ecs.instance-type ~~ x", 28, "expected an operator"},
		{"attribute: == x", 10, "needs a name"},
		{"instanceType == x", 0, "unknown subject"},
		{"attribute:a == ", 15, "expected a value"},
		{"attribute:a == x and", 20, "expected a subject"},
		{"(attribute:a == x", 17, "expected )"},
		{"attribute:a == x)", 16, "unexpected"},
		{"attribute:a in x", 15, "expected a list"},
		{"attribute:a in []", 16, "empty list"},
		{"attribute:a in [x y]", 18, "expected , or ]"},
		{"attribute:a == 'x", 15, "unterminated"},
		{"attribute:a =~ (", 15, "bad pattern"},
		{strings.Repeat("(", MaxDepth+1) + "attribute:a == x" + strings.Repeat(")", MaxDepth+1), MaxDepth, "nested deeper"},
		{strings.Repeat("not ", MaxDepth+1) + "attribute:a == x", 4 * MaxDepth, "nested deeper"},
		{"attribute:a =~ " + strings.Repeat("a", MaxPatternSize+1), 15, "pattern longer"},
		{strings.Repeat(" ", MaxLength+1), MaxLength, "longer than"},
	}
	for _, c := range cases {
		t.Run(c.expr[:min(len(c.expr), 40)], func(t *testing.T) {
			_, err := Parse(c.expr)
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q) = %v, want a *SyntaxError", c.expr, err)
			}
			if se.Pos != c.pos || !strings.Contains(se.Msg, c.msg) {
				t.Fatalf("Parse(%q) = %v; want offset %d and %q", c.expr, err, c.pos, c.msg)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("offset %d", c.pos)) {
				t.Fatalf("error %q does not name the offset", err)
			}
		})
	}
}

// TestStringRoundTrip checks that printing a parsed expression gives one that parses to the same thing.
func TestStringRoundTrip(t *testing.T) {
	for _, src := range []string{
		"attribute:ecs.instance-type == g4dn.xlarge",
		"not (attribute:a in [x, 'y z'] or attribute:b exists) and ec2InstanceType =~ g.*",
		"attribute:a !~ 'p[0-9]+' || runningTasksCount > 2",
	} {
		e, err := Parse(src)
		if err != nil {
			t.Fatalf("Parse(%q): %v", src, err)
		}
		again, err := Parse(e.String())
		if err != nil {
			t.Fatalf("Parse(%q) (printed from %q): %v", e.String(), src, err)
		}
		if again.String() != e.String() {
			t.Fatalf("round trip of %q: %q then %q", src, e.String(), again.String())
		}
	}
}

// FuzzParse: no input panics, every error is a positioned *SyntaxError within the input, and whatever parses
// prints to an expression that parses to the same text.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzParse", "*"))
	if len(seeds) == 0 {
		f.Fatal("no seed corpus in testdata/fuzz/FuzzParse")
	}
	f.Fuzz(func(t *testing.T, src string) {
		e, err := Parse(src)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Pos < 0 || se.Pos > len(src) {
				t.Fatalf("Parse(%q) = %v: want a *SyntaxError inside the input", src, err)
			}
			return
		}
		e.Eval(g4dn)
		printed := e.String()
		again, err := Parse(printed)
		if err != nil {
			if len(printed) > MaxLength {
				return
			}
			t.Fatalf("Parse(%q) printed %q, which does not parse: %v", src, printed, err)
		}
		if again.String() != printed {
			t.Fatalf("Parse(%q): printed %q, reprinted %q", src, printed, again.String())
		}
	})
}

func TestSeedCorpusReadable(t *testing.T) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzParse", "*"))
	if err != nil || len(seeds) < 5 {
		t.Fatalf("want at least 5 seeds in testdata/fuzz/FuzzParse, have %d (%v)", len(seeds), err)
	}
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil || !strings.HasPrefix(string(data), "go test fuzz v1\n") {
			t.Errorf("%s is not a go test fuzz v1 file: %v", s, err)
		}
	}
}
