package steps

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// TestHandlersHaveTheirClients: each Lambda's handler builds its step with every port the step calls on AWS (local
// mode hands every step every port, so a missing client would show only on AWS).
func TestHandlersHaveTheirClients(t *testing.T) {
	cfg := deployment.DefaultConfig()
	cfg.Cluster, cfg.ListenerArn, cfg.LoadBalancerName, cfg.WakerTargetGroup = "ollama", "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/x/1/2",
		"app/x/1", "x-waker"
	set := func(name string) *Set { return Build(cfg, handlerClients(name, aws.Config{Region: "us-east-1"}), nil) }
	for name, ok := range map[string]func(*Set) bool{
		"validate": func(s *Set) bool { return s.Validate.S3 != nil },
		"capacity": func(s *Set) bool {
			l := s.Capacity.Launches
			return s.Capacity.ECS != nil && l.Groups != nil && l.Quotas != nil && l.Instances != nil
		},
		"runtask": func(s *Set) bool {
			r := s.RunTask
			return r.ECS != nil && r.Router != nil && r.Router.Keys != nil && r.Services != nil && r.Services.Scaling != nil
		},
		"health": func(s *Set) bool {
			h := s.Health
			return h.ECS != nil && h.Launches.Groups != nil && h.Router != nil && h.Router.Keys != nil && h.Services != nil
		},
		"autostop": func(s *Set) bool { return s.AutoStop.Scheduler != nil && s.AutoStop.ECS != nil },
		"cleanup": func(s *Set) bool {
			st := s.Cleanup.Stopper
			return st.ECS != nil && st.Scheduler != nil && st.Routes != nil && st.Services != nil
		},
		"teardown": func(s *Set) bool {
			st := s.Teardown.Stopper
			return st.ECS != nil && st.Scheduler != nil && st.Routes != nil && st.Services != nil && s.Teardown.Usage != nil &&
				s.Teardown.Interrupted.Executions != nil
		},
		"waker": func(s *Set) bool { return s.Waker != nil && s.Waker.Router.Keys != nil && s.Waker.Executions != nil },
	} {
		if !ok(set(name)) {
			t.Errorf("the %s handler lacks a client its step calls", name)
		}
	}
}
