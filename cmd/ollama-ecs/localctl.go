package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/functions/steps"
	"github.com/ollama-ecs/ollama-ecs/local"
	localcloud "github.com/ollama-ecs/ollama-ecs/local/cloud"
	"github.com/ollama-ecs/ollama-ecs/local/engine"
)

// localStack is what the local commands need from a stack: a running one reached through its control API
// (`local up`), or one started for a single command (one-shot). Both behave alike.
type localStack interface {
	Do(ctx context.Context, method, path string, body, out any) error
	Close(ctx context.Context) error
	OneShot() bool
}

// remoteStack is a stack another `ollama-ecs local up` process runs.
type remoteStack struct{ *local.Client }

func (remoteStack) Close(context.Context) error { return nil }
func (remoteStack) OneShot() bool               { return false }

// inProcessStack is a stack started for one command, served on its own handler without a port.
type inProcessStack struct {
	stack   *local.Stack
	handler http.Handler
}

func (s inProcessStack) Do(ctx context.Context, method, path string, body, out any) error {
	c := &local.Client{URL: "http://in-process", HTTP: &http.Client{Transport: handlerTransport{s.handler}}}
	return c.Do(ctx, method, path, body, out)
}
func (s inProcessStack) Close(ctx context.Context) error { return s.stack.Close(ctx) }
func (inProcessStack) OneShot() bool                     { return true }

// handlerTransport serves requests with an http.Handler in memory.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

// controlHandler is the stack's control API plus the deployments view the CLI's list shares with AWS.
func controlHandler(s *local.Stack) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", s.Handler())
	mux.HandleFunc("GET /deployments", func(w http.ResponseWriter, r *http.Request) {
		ds, err := listDeployments(r.Context(), s.ECS, s.Scheduler, s.ECS.Config().Name, local.ScheduleGroup, "", time.Now(), true,
			&steps.UsageReader{Metrics: s.LB, LoadBalancer: s.LB.FullName(), LB: s.LB})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		recs, err := s.Sleeping(r.Context())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		ds = withEndpoints(withSleeping(ds, recs), s.LB.URL())
		_ = json.NewEncoder(w).Encode(ds)
	})
	return mux
}

// openLocal connects to a running stack, or starts one for this command when allowed.
func openLocal(ctx context.Context, oneShotOK bool, stderr io.Writer) (localStack, error) {
	pointer, err := local.PointerPath()
	if err != nil {
		return nil, err
	}
	if c, ok := local.Connect(pointer); ok {
		return remoteStack{c}, nil
	}
	if !oneShotOK {
		return nil, errors.New("no local stack is running: start one with `ollama-ecs local up`")
	}
	fmt.Fprintln(stderr, "no local stack running: starting one for this command (`ollama-ecs local up` keeps one running)")
	s, err := local.Start(ctx, local.Options{HealthWait: 200 * time.Millisecond})
	if err != nil {
		return nil, fmt.Errorf("starting a local stack: %w", err)
	}
	return inProcessStack{stack: s, handler: controlHandler(s)}, nil
}

func defineLocalUp(fs *pflag.FlagSet) runner {
	scale := fs.Float64("time-scale", 1, "run schedule time this many times faster than real time (auto-stop TTLs)")
	clusterFile := fs.String("cluster", "", "cluster config JSON (default: the embedded local/cloud/cluster.json)")
	consoleAddr := fs.String("console", "127.0.0.1:0", "the console's loopback address (host:port)")
	return func(ctx context.Context, _ []string, stdout, stderr io.Writer) error {
		opts := local.Options{TimeScale: *scale, HealthWait: 200 * time.Millisecond}
		if *clusterFile != "" {
			cfg, err := localcloud.LoadConfig(*clusterFile)
			if err != nil {
				return err
			}
			opts.Cluster = cfg
		}
		pointer, err := local.PointerPath()
		if err != nil {
			return err
		}
		if c, ok := local.Connect(pointer); ok {
			return fmt.Errorf("a local stack already runs at %s", c.URL)
		}
		ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		s, err := local.Start(ctx, opts)
		if err != nil {
			return err
		}
		url, err := local.Serve(ctx, controlHandler(s), pointer)
		if err != nil {
			_ = s.Close(context.Background())
			return err
		}
		// The console reads the stack through the same control API the other local commands use.
		con, err := newConsole(localConsole{inProcessStack{stack: s, handler: controlHandler(s)}})
		if err == nil {
			var consoleURL string
			if consoleURL, err = listenConsole(ctx, con, *consoleAddr); err == nil {
				fmt.Fprintf(stdout, "console: %s\n", consoleURL)
			}
		}
		if err != nil {
			_ = s.Close(context.Background())
			return err
		}
		cfg := s.ECS.Config()
		fmt.Fprintf(stdout, "local stack up: control API %s, cluster %q (%d instance groups), bucket %s, load balancer %s\n", url, cfg.Name,
			len(cfg.ContainerInstances), local.Bucket, s.LB.URL())
		fmt.Fprintln(stdout, "try: ollama-ecs local upload ./model.gguf --follow   (Ctrl-C stops every deployment and exits)")
		fmt.Fprintf(stdout, "model registry %s: models the catalog does not list resolve here; add one with\n"+
			"  ollama cp MODEL %s/library/NAME:TAG && ollama push --insecure %s/library/NAME:TAG, then: ollama-ecs local deploy NAME:TAG\n",
			s.Registry.Host, s.Registry.Host, s.Registry.Host)
		fmt.Fprintf(stdout, "model images %s (the stand-in for the stack's ECR repository), built on %s\n", s.ImageRepository(), s.OllamaImage)
		<-ctx.Done()
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		fmt.Fprintln(stdout, "stopping the local stack")
		return s.Close(closeCtx)
	}
}

// localTarget is what a running local stack checks requests against: its GPU types and its registry.
func localTarget(ctx context.Context, ls localStack) (target, error) {
	var t target
	if err := ls.Do(ctx, http.MethodGet, "/gpu-types", nil, &t.GPUTypes); err != nil {
		return t, err
	}
	if err := ls.Do(ctx, http.MethodGet, "/gpu-spot-types", nil, &t.SpotTypes); err != nil {
		return t, err
	}
	err := ls.Do(ctx, http.MethodGet, "/registry", nil, &t.Registry)
	return t, err
}

func defineLocalDeploy(fs *pflag.FlagSet) runner {
	d := addDeployFlags(fs)
	follow := fs.Bool("follow", true, "show the execution until it ends")
	output := outputFlag(fs)
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		ls, err := openLocal(ctx, true, stderr)
		if err != nil {
			return err
		}
		defer ls.Close(context.WithoutCancel(ctx))
		// The same checks and plan as on AWS, on the running stack's GPU types, before anything starts.
		t, err := localTarget(ctx, ls)
		if err != nil {
			return err
		}
		req, plan, err := d.request(ctx, pos[0], t)
		if err != nil {
			return err
		}
		// A direct deploy's execution is named after its deployment id: one already there is this deployment, and
		// nothing new starts, as on AWS.
		res, err := localExisting(ctx, ls, req.DeploymentID)
		if err != nil {
			return err
		}
		if !res.AlreadyStarted {
			var started struct{ ExecutionArn string }
			if err := ls.Do(ctx, http.MethodPost, "/deploy", req, &started); err != nil {
				return err
			}
			res = startResult{DeploymentID: req.DeploymentID, ExecutionArn: started.ExecutionArn, Status: "RUNNING"}
		}
		if *output != "json" {
			writeStarted(stdout, req, plan, res)
		}
		if !*follow && !ls.OneShot() {
			if *output == "json" {
				return writeJSON(stdout, res)
			}
			return nil
		}
		return followLocal(ctx, ls, res, *output == "json", stdout)
	}
}

func defineLocalUpload(fs *pflag.FlagSet) runner {
	env := fs.String("env", "dev", "dev or prod (prod uploads go under models/prod/)")
	name := fs.String("name", "", "model name (default: the file name)")
	follow := fs.Bool("follow", true, "show the deployment the upload starts")
	output := outputFlag(fs)
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		if *env != "dev" && *env != "prod" {
			return usageError{fmt.Sprintf("--env %q is not dev or prod", *env)}
		}
		modelfile, err := checkModelFile(pos[0])
		if err != nil {
			return err
		}
		key, err := uploadKey(local.ModelPrefix, *env, pos[0], *name, modelfile)
		if err != nil {
			return err
		}
		f, st, err := openUpload(pos[0], local.Bucket, local.ModelPrefix, key)
		if err != nil {
			return err
		}
		defer f.Close()
		ls, err := openLocal(ctx, true, stderr)
		if err != nil {
			return err
		}
		defer ls.Close(context.WithoutCancel(ctx))
		var before []local.Started
		if err := ls.Do(ctx, http.MethodGet, "/executions", nil, &before); err != nil {
			return err
		}
		// Streamed: the file is never held in memory; a progress bar on a terminal, as the AWS upload shows.
		bar := &progressBar{Total: st.Size()}
		if *output != "json" && isTerminal(stderr) {
			bar.W = stderr
		}
		err = ls.Do(ctx, http.MethodPut, "/objects/"+key, bar.reader(f), nil)
		bar.done()
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "uploaded %s (%s) to s3://%s/%s\n", filepath.Base(pos[0]), sizeText(st.Size()), local.Bucket, key)
		if !*follow && !ls.OneShot() {
			return nil
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			var now []local.Started
			if err := ls.Do(ctx, http.MethodGet, "/executions", nil, &now); err != nil {
				return err
			}
			if len(now) > len(before) {
				return followLocal(ctx, ls, startResult{DeploymentID: now[len(before)].DeploymentID, ExecutionArn: now[len(before)].ExecutionArn}, *output == "json", stdout)
			}
			if time.Now().After(deadline) {
				return errors.New("the upload started no execution within 10 s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// localExisting finds the execution a direct deploy of id started before, if any.
func localExisting(ctx context.Context, ls localStack, id string) (startResult, error) {
	var started []local.Started
	if err := ls.Do(ctx, http.MethodGet, "/executions", nil, &started); err != nil {
		return startResult{}, err
	}
	for _, st := range started {
		if strings.HasSuffix(st.ExecutionArn, ":"+id) {
			x, _, err := localEngine{ls}.read(ctx, st.ExecutionArn)
			if err != nil {
				return startResult{}, err
			}
			return startResult{DeploymentID: id, ExecutionArn: x.ARN, StartDate: x.StartDate, Status: x.Status, AlreadyStarted: true}, nil
		}
	}
	return startResult{DeploymentID: id}, nil
}

// localEngine reads executions from the local stack's engine.
type localEngine struct{ ls localStack }

func (l localEngine) read(ctx context.Context, arn string) (execution, []deployment.HistoryEvent, error) {
	var ex engine.Execution
	if err := l.ls.Do(ctx, http.MethodGet, "/executions/"+arn, nil, &ex); err != nil {
		return execution{}, nil, err
	}
	return execution{ARN: ex.ExecutionArn, Name: ex.Name, Status: string(ex.Status), StartDate: ex.StartDate,
		StopDate: ex.StopDate, Output: ex.Output, Error: ex.Error, Cause: ex.Cause}, ex.Events, nil
}

// followLocal follows a local execution to its end as deploy --follow does on AWS: the same lines, the same
// record, the same JSON.
func followLocal(ctx context.Context, ls localStack, res startResult, asJSON bool, stdout io.Writer) error {
	f := &follower{Source: localEngine{ls}, Out: stdout, Spinner: isTerminal(stdout), Interval: 100 * time.Millisecond, Quiet: asJSON}
	if err := followToEnd(ctx, f, res, asJSON, stdout); err != nil {
		return err
	}
	if ls.OneShot() && !asJSON {
		fmt.Fprintln(stdout, "\none-shot: the deployment stops with this command; `ollama-ecs local up` keeps a stack running")
	}
	return nil
}

func defineLocalList(fs *pflag.FlagSet) runner {
	return localStackCommand(fs,
		func(ctx context.Context, ls localStack, _ []string, asJSON bool, stdout io.Writer) error {
			var ds []listedDeployment
			if err := ls.Do(ctx, http.MethodGet, "/deployments", nil, &ds); err != nil {
				return err
			}
			if asJSON {
				return writeJSON(stdout, ds)
			}
			return writeDeployments(stdout, ds, time.Now())
		})
}

func defineLocalStop(fs *pflag.FlagSet) runner {
	return localStackCommand(fs,
		func(ctx context.Context, ls localStack, pos []string, asJSON bool, stdout io.Writer) error {
			if !events.ValidDeploymentID(pos[0]) {
				return usageError{fmt.Sprintf("%q is not a deployment id (3-36 of a-z, 0-9, -)", pos[0])}
			}
			// Unknown ids fail before anything is stopped, as on AWS: a typo must not look like a stop.
			var ds []listedDeployment
			if err := ls.Do(ctx, http.MethodGet, "/deployments", nil, &ds); err != nil {
				return err
			}
			if !slices.ContainsFunc(ds, func(d listedDeployment) bool { return d.DeploymentID == pos[0] }) {
				return fmt.Errorf("unknown deployment %q: no running task", pos[0])
			}
			var res deployment.Stopped
			if err := ls.Do(ctx, http.MethodPost, "/stop", events.StopRequest{DeploymentID: pos[0]}, &res); err != nil {
				return err
			}
			if asJSON {
				return writeJSON(stdout, res)
			}
			return writeStopped(stdout, pos[0], res)
		})
}

func defineLocalWake(fs *pflag.FlagSet) runner {
	return localStackCommand(fs,
		func(ctx context.Context, ls localStack, pos []string, asJSON bool, stdout io.Writer) error {
			if !events.ValidDeploymentID(pos[0]) {
				return usageError{fmt.Sprintf("%q is not a deployment id (3-36 of a-z, 0-9, -)", pos[0])}
			}
			var res deployment.WakeResult
			if err := ls.Do(ctx, http.MethodPost, "/wake/"+pos[0], nil, &res); err != nil {
				return err
			}
			return writeWake(stdout, res, asJSON)
		})
}

func defineLocalTeardown(fs *pflag.FlagSet) runner {
	return localStackCommand(fs,
		func(ctx context.Context, ls localStack, _ []string, asJSON bool, stdout io.Writer) error {
			raw, _ := events.Sample(events.KindTeardown)
			var routed local.Routed
			if err := ls.Do(ctx, http.MethodPost, "/events", raw, &routed); err != nil {
				return err
			}
			if asJSON {
				return writeJSON(stdout, routed.Stopped)
			}
			fmt.Fprintf(stdout, "scheduled dev teardown: stopped %d deployment(s)", len(routed.Stopped.Deployments))
			if len(routed.Stopped.Deployments) > 0 {
				fmt.Fprintf(stdout, ": %s", strings.Join(routed.Stopped.Deployments, ", "))
			}
			fmt.Fprintln(stdout)
			return nil
		})
}

func defineLocalHistory(fs *pflag.FlagSet) runner {
	return localStackCommand(fs,
		func(ctx context.Context, ls localStack, pos []string, asJSON bool, stdout io.Writer) error {
			var started []local.Started
			if err := ls.Do(ctx, http.MethodGet, "/executions", nil, &started); err != nil {
				return err
			}
			// Newest first: the execution's ARN, its name (direct deploys), or the deployment id its input gives.
			for i := len(started) - 1; i >= 0; i-- {
				var ex engine.Execution
				if err := ls.Do(ctx, http.MethodGet, "/executions/"+started[i].ExecutionArn, nil, &ex); err != nil {
					return err
				}
				var rec deployment.Record
				_ = json.Unmarshal(ex.Output, &rec)
				if ex.ExecutionArn != pos[0] && ex.Name != pos[0] && rec.DeploymentID != pos[0] && started[i].DeploymentID != pos[0] {
					continue
				}
				x := execution{ARN: ex.ExecutionArn, Name: ex.Name, Status: string(ex.Status), StartDate: ex.StartDate,
					StopDate: ex.StopDate, Output: ex.Output, Error: ex.Error, Cause: ex.Cause}
				if asJSON {
					return writeJSON(stdout, historyJSON(x, ex.Events))
				}
				writeExecutionHeader(stdout, x)
				fmt.Fprintln(stdout)
				fmt.Fprint(stdout, deployment.RenderHistory(ex.Events))
				return nil
			}
			return fmt.Errorf("no execution for %q on the local stack", pos[0])
		})
}

// localStackCommand is a command that acts on a running stack (list, stop, history, teardown): its --output flag,
// then the connection to the stack.
func localStackCommand(fs *pflag.FlagSet,
	body func(ctx context.Context, ls localStack, pos []string, asJSON bool, stdout io.Writer) error) runner {
	output := outputFlag(fs)
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		ls, err := openLocal(ctx, false, stderr)
		if err != nil {
			return err
		}
		return body(ctx, ls, pos, *output == "json", stdout)
	}
}
