package cloud

import (
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
)

// Parameters is local SSM Parameter Store for the deployments' API keys: SecureString values are kept as given
// (there is no KMS here) and read back only with WithDecryption, as SSM hands them out.
type Parameters struct {
	mu     sync.Mutex
	values map[string]ssmtypes.Parameter
}

// NewParameters is an empty parameter store.
func NewParameters() *Parameters { return &Parameters{values: map[string]ssmtypes.Parameter{}} }

// PutParameter stores a parameter; an existing one needs Overwrite (ParameterAlreadyExists otherwise).
func (p *Parameters) PutParameter(_ context.Context, in *ssm.PutParameterInput, _ ...func(*ssm.Options)) (*ssm.PutParameterOutput, error) {
	name := aws.ToString(in.Name)
	if !strings.HasPrefix(name, "/") || aws.ToString(in.Value) == "" {
		return nil, &ssmtypes.InvalidKeyId{Message: aws.String("a parameter needs a /path name and a value")}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	prev, exists := p.values[name]
	if exists && !aws.ToBool(in.Overwrite) {
		return nil, &ssmtypes.ParameterAlreadyExists{Message: aws.String("The parameter already exists. To overwrite this value, set the overwrite option in the request to true.")}
	}
	p.values[name] = ssmtypes.Parameter{Name: in.Name, Value: in.Value, Type: in.Type, Version: prev.Version + 1}
	return &ssm.PutParameterOutput{Version: prev.Version + 1}, nil
}

// GetParameter reads a parameter; a SecureString without WithDecryption comes back unreadable, as from SSM.
func (p *Parameters) GetParameter(_ context.Context, in *ssm.GetParameterInput, _ ...func(*ssm.Options)) (*ssm.GetParameterOutput, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.values[aws.ToString(in.Name)]
	if !ok {
		return nil, &ssmtypes.ParameterNotFound{}
	}
	if v.Type == ssmtypes.ParameterTypeSecureString && !aws.ToBool(in.WithDecryption) {
		v.Value = aws.String("(encrypted)")
	}
	return &ssm.GetParameterOutput{Parameter: &v}, nil
}

// DeleteParameter deletes a parameter; a missing one is ParameterNotFound.
func (p *Parameters) DeleteParameter(_ context.Context, in *ssm.DeleteParameterInput, _ ...func(*ssm.Options)) (*ssm.DeleteParameterOutput, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.values[aws.ToString(in.Name)]; !ok {
		return nil, &ssmtypes.ParameterNotFound{}
	}
	delete(p.values, aws.ToString(in.Name))
	return &ssm.DeleteParameterOutput{}, nil
}

// GetParametersByPath lists the parameters under a path (one level, as without Recursive), sorted by name, in one
// page.
func (p *Parameters) GetParametersByPath(_ context.Context, in *ssm.GetParametersByPathInput, _ ...func(*ssm.Options)) (*ssm.GetParametersByPathOutput, error) {
	prefix := strings.TrimRight(aws.ToString(in.Path), "/") + "/"
	p.mu.Lock()
	defer p.mu.Unlock()
	out := &ssm.GetParametersByPathOutput{}
	for name, v := range p.values {
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok || (!aws.ToBool(in.Recursive) && strings.Contains(rest, "/")) {
			continue
		}
		if v.Type == ssmtypes.ParameterTypeSecureString && !aws.ToBool(in.WithDecryption) {
			v.Value = aws.String("(encrypted)")
		}
		out.Parameters = append(out.Parameters, v)
	}
	slices.SortFunc(out.Parameters, func(a, b ssmtypes.Parameter) int { return strings.Compare(aws.ToString(a.Name), aws.ToString(b.Name)) })
	return out, nil
}
