package deployment

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// TestErrorTypesComplete finds every type with an Error method in the packages whose errors reach the state
// machine and checks ErrorTypes lists it, so a new error cannot slip past the ASL check.
func TestErrorTypesComplete(t *testing.T) {
	var listed []string
	for _, e := range ErrorTypes {
		listed = append(listed, reflect.TypeOf(e).Elem().Name())
	}
	for _, dir := range []string{".", "../../planner", "../../catalog"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if filepath.Ext(f) != ".go" || len(f) > 8 && f[len(f)-8:] == "_test.go" {
				continue
			}
			file, err := parser.ParseFile(token.NewFileSet(), f, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range file.Decls {
				fn, ok := d.(*ast.FuncDecl)
				if !ok || fn.Name.Name != "Error" || fn.Recv == nil {
					continue
				}
				star, ok := fn.Recv.List[0].Type.(*ast.StarExpr)
				if !ok {
					continue
				}
				name := star.X.(*ast.Ident).Name
				if ast.IsExported(name) && !slices.Contains(listed, name) {
					t.Errorf("%s: error type %s is not in ErrorTypes", f, name)
				}
			}
		}
	}
}
