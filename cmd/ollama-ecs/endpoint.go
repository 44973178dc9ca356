package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	aas "github.com/aws/aws-sdk-go-v2/service/applicationautoscaling"
	aastypes "github.com/aws/aws-sdk-go-v2/service/applicationautoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/spf13/pflag"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/functions/steps"
)

// endpointInfo is how to reach a deployment.
type endpointInfo struct {
	DeploymentID string `json:"deploymentId"`
	// Endpoint is the base URL for the Ollama API and the ollama CLI (OLLAMA_HOST); OpenAI is the base URL of the
	// OpenAI-compatible API.
	Endpoint string `json:"endpoint"`
	OpenAI   string `json:"openai"`
	// Key is the API key (only with --with-key, for those allowed to read its parameter); KeyInPath is the
	// endpoint with the key in the path, for clients that cannot send a header (the ollama CLI).
	Key       string `json:"key,omitempty"`
	KeyInPath string `json:"endpointWithKey,omitempty"`
	// KeyRequired says whether requests need the key.
	KeyRequired bool `json:"keyRequired"`
}

func defineEndpoint(fs *pflag.FlagSet) runner {
	withKey := fs.Bool("with-key", false, "print the endpoint with the API key in its path (reads the key's SSM parameter)")
	af := addAWSFlags(fs)
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		id := pos[0]
		if !events.ValidDeploymentID(id) {
			return usageError{fmt.Sprintf("%q is not a deployment id (3-36 of a-z, 0-9, -)", id)}
		}
		c, err := connect(ctx, af, outEndpointBase, outKeyPrefix)
		if err != nil {
			return err
		}
		base := strings.TrimRight(c.Outputs[outEndpointBase], "/") + deployment.RoutePath(id)
		info := endpointInfo{DeploymentID: id, Endpoint: base, OpenAI: base + "/v1"}
		got, err := c.Params.GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(deployment.KeyParameterName(c.Outputs[outKeyPrefix], id)),
			WithDecryption: aws.Bool(*withKey)})
		var missing *ssmtypes.ParameterNotFound
		switch {
		case errors.As(err, &missing) || isCode(err, "ParameterNotFound"):
			if *withKey {
				return fmt.Errorf("deployment %s has no API key: its endpoint is %s", id, base)
			}
		case err != nil:
			return awsErr("ssm:GetParameter", err)
		default:
			info.KeyRequired = true
			if *withKey {
				info.Key = aws.ToString(got.Parameter.Value)
				info.KeyInPath = base + deployment.KeySegment + info.Key
			}
		}
		if af.json() {
			return writeJSON(stdout, info)
		}
		if *withKey {
			_, err := fmt.Fprintln(stdout, info.KeyInPath)
			return err
		}
		fmt.Fprintln(stdout, info.Endpoint)
		if info.KeyRequired {
			fmt.Fprintf(stderr, "%s needs its API key: send Authorization: Bearer <key> (ollama-ecs endpoint %s --output json --with-key), or use ollama-ecs endpoint %s --with-key as OLLAMA_HOST\n", id, id, id)
		}
		return nil
	}
}

func defineScale(fs *pflag.FlagSet) runner {
	lo := fs.Int("min", 0, "the fewest tasks the service keeps (1..20)")
	hi := fs.Int("max", 0, "the most tasks the service scales out to under load (min..20)")
	af := addAWSFlags(fs)
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		id := pos[0]
		if !events.ValidDeploymentID(id) {
			return usageError{fmt.Sprintf("%q is not a deployment id (3-36 of a-z, 0-9, -)", id)}
		}
		if *lo < 1 || *hi < *lo || *hi > events.MaxTasksLimit {
			return usageError{fmt.Sprintf("--min %d --max %d: want 1 <= min <= max <= %d", *lo, *hi, events.MaxTasksLimit)}
		}
		c, err := connect(ctx, af, outCluster)
		if err != nil {
			return err
		}
		cluster, name := c.Outputs[outCluster], deployment.ServiceName(id)
		svc, err := c.Services.DescribeServices(ctx, &ecs.DescribeServicesInput{Cluster: aws.String(cluster), Services: []string{name}})
		if err != nil {
			return awsErr("ecs:DescribeServices", err)
		}
		if len(svc.Services) == 0 || aws.ToString(svc.Services[0].Status) != "ACTIVE" {
			return fmt.Errorf("deployment %s has no active service in cluster %s: only a prod deployment scales (a dev deployment is one task)", id, cluster)
		}
		// The target tracking policy stays; new bounds apply at once (a min above the running count scales out).
		_, err = c.Scaling.RegisterScalableTarget(ctx, &aas.RegisterScalableTargetInput{ServiceNamespace: aastypes.ServiceNamespaceEcs,
			ResourceId: aws.String("service/" + clusterName(cluster) + "/" + name), ScalableDimension: aastypes.ScalableDimensionECSServiceDesiredCount,
			MinCapacity: aws.Int32(int32(*lo)), MaxCapacity: aws.Int32(int32(*hi))})
		if err != nil {
			return awsErr("application-autoscaling:RegisterScalableTarget", err)
		}
		if af.json() {
			return writeJSON(stdout, map[string]any{"deploymentId": id, "service": aws.ToString(svc.Services[0].ServiceArn), "min": *lo, "max": *hi,
				"running": svc.Services[0].RunningCount, "desired": svc.Services[0].DesiredCount})
		}
		_, err = fmt.Fprintf(stdout, "%s scales between %d and %d tasks (now %d running of %d desired)\n", id, *lo, *hi,
			svc.Services[0].RunningCount, svc.Services[0].DesiredCount)
		return err
	}
}

// clusterName is a cluster's name from its name or ARN (Application Auto Scaling resource ids name it).
func clusterName(cluster string) string { return cluster[strings.LastIndex(cluster, "/")+1:] }

func defineWake(fs *pflag.FlagSet) runner {
	af := addAWSFlags(fs)
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		id := pos[0]
		if !events.ValidDeploymentID(id) {
			return usageError{fmt.Sprintf("%q is not a deployment id (3-36 of a-z, 0-9, -)", id)}
		}
		c, err := connect(ctx, af, outStateMachine, outListener, outKeyPrefix)
		if err != nil {
			return err
		}
		w := &steps.Waker{Router: c.router(), Executions: c.SFN, StateMachineArn: c.Outputs[outStateMachine]}
		res, err := w.Wake(ctx, id)
		if err != nil {
			return err
		}
		return writeWake(stdout, res, af.json())
	}
}

// writeWake prints what a wake did; a refused or unknown wake is an error.
func writeWake(w io.Writer, res deployment.WakeResult, asJSON bool) error {
	if asJSON {
		if err := writeJSON(w, res); err != nil {
			return err
		}
	}
	switch {
	case res.Status == http.StatusNotFound || res.Refused != "":
		return errors.New(res.Message)
	case asJSON:
		return nil
	case res.Started:
		_, err := fmt.Fprintf(w, "waking %s: execution %s; it should serve in about %d s\n", res.DeploymentID, res.Execution, res.RetryAfter)
		return err
	default:
		_, err := fmt.Fprintf(w, "%s\n", res.Message)
		return err
	}
}
