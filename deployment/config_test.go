package deployment

import (
	"context"
	"testing"
)

// TestLambdaAWSConfig: the functions take Lambda's credentials and region from the environment, and refuse to
// start without them rather than fall back to anything else.
func TestLambdaAWSConfig(t *testing.T) {
	env := map[string]string{"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token"}
	cfg, err := LambdaAWSConfig(func(k string) string { return env[k] })
	if err != nil || cfg.Region != "eu-west-1" {
		t.Fatalf("%+v %v", cfg, err)
	}
	creds, err := cfg.Credentials.Retrieve(context.Background())
	if err != nil || creds.AccessKeyID != "AKID" || creds.SecretAccessKey != "secret" || creds.SessionToken != "token" {
		t.Errorf("credentials %+v %v", creds, err)
	}
	delete(env, "AWS_REGION")
	if _, err := LambdaAWSConfig(func(k string) string { return env[k] }); err == nil {
		t.Error("no region: want an error")
	}
}
