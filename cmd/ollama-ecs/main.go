// Command ollama-ecs plans, deploys and inspects Ollama model servers on AWS ECS, or runs the whole system on
// this machine in local mode.
//
// Exit codes: 0 success (and --help), 1 failure, 2 usage (an unknown command or flag, a wrong argument).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// runner is a command's work, given its positional arguments; its flags were defined on the command's flag set.
type runner func(ctx context.Context, pos []string, stdout, stderr io.Writer) error

// spec is one command: where it sits, what it says, the flags it defines and how its arguments complete.
type spec struct {
	use, short string
	long       string
	define     func(*pflag.FlagSet) runner
	// complete offers the positional arguments (model names, deployment ids) to shell completion; flags are the
	// command's, as typed so far (--profile, --region, --stack).
	complete func(ctx context.Context, flags *pflag.FlagSet) []string
}

func commands() []spec {
	return []spec{
		{use: "plan MODEL", short: "size a model and rank where it can run, cheapest first", define: definePlan, complete: modelNames},
		{use: "deploy MODEL", short: "start a deployment on AWS (--follow to watch it)", define: defineDeploy, complete: modelNames},
		{use: "list", short: "list deployments with uptime, cost so far and auto-stop", define: defineList},
		{use: "stop ID", short: "stop a deployment: its task or service, its auto-stop schedule and its route", define: defineStop, complete: deploymentIDs},
		{use: "endpoint ID", short: "print a deployment's URL (with its API key where allowed: --with-key)", define: defineEndpoint, complete: deploymentIDs},
		{use: "wake ID", short: "start a sleeping deployment now, as a request to its endpoint would", define: defineWake, complete: deploymentIDs},
		{use: "scale ID", short: "change a prod deployment's service bounds (--min, --max)", define: defineScale, complete: deploymentIDs},
		{use: "history ID|EXECUTION-ARN", short: "show a deployment's execution history as the console does", define: defineHistory, complete: deploymentIDs},
		{use: "console", short: "serve the web console for the deployed stack on loopback (deployments, executions as graphs)", define: defineConsole},
		{use: "upload FILE", short: "upload a GGUF model or Modelfile, which deploys it", define: defineUpload},
		{use: "prices", short: "refresh the compute data's prices for a region from AWS (Price List, Spot history, Savings Plans)", long: pricesLong, define: definePrices},
	}
}

func groups() map[string][]spec {
	return map[string][]spec{
		"events": {
			{use: "validate FILE|-", short: "check an event file against the contracts", define: defineEventsValidate},
			{use: "sample deploy|direct|stop|upload|teardown|task-stopped", short: "print an example event of a kind", define: defineEventsSample},
		},
		"local": {
			{use: "demo", short: "run the main job once: upload, deploy, fall back, generate, auto-stop, tear down", define: defineLocalDemo},
			{use: "up", short: "keep a local stack running for the other local commands (Ctrl-C stops it)", define: defineLocalUp},
			{use: "deploy MODEL", short: "deploy on the local stack (one-shot when none is up)", define: defineLocalDeploy},
			{use: "console", short: "serve the web console for the deployed stack on loopback (deployments, executions as graphs)", define: defineConsole},
			{use: "upload FILE", short: "upload a model to the local bucket, which deploys it", define: defineLocalUpload},
			{use: "list", short: "list the local stack's deployments", define: defineLocalList},
			{use: "stop ID", short: "stop a local deployment", define: defineLocalStop},
			{use: "wake ID", short: "wake a sleeping local deployment", define: defineLocalWake},
			{use: "history ID|EXECUTION-ARN", short: "show a local execution's history", define: defineLocalHistory},
			{use: "teardown", short: "run the scheduled dev teardown now", define: defineLocalTeardown},
		},
	}
}

var groupShort = map[string]string{
	"events": "validate event files or print samples of each kind",
	"local":  "run the whole system on this machine: real engine, real handlers, real Ollama",
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "ollama-ecs:", err)
		os.Exit(exitCode(err))
	}
}

// run executes one command line on a fresh command tree (flags hold no state between runs).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ran := false
	for _, c := range all(root) {
		if c.RunE != nil {
			inner := c.RunE
			c.RunE = func(c *cobra.Command, a []string) error { ran = true; return inner(c, a) }
		}
	}
	err := root.ExecuteContext(ctx)
	if err != nil && !ran {
		// cobra refused the command line before any command ran: an unknown command or flag.
		var u usageError
		if !errors.As(err, &u) {
			err = usageError{err.Error()}
		}
	}
	return err
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "ollama-ecs",
		Short: "deploy Ollama models onto AWS ECS, on the cheapest placement that fits, or run it all locally",
		Long: "ollama-ecs plans, deploys and inspects Ollama model servers on AWS ECS (CPU on Fargate, GPU on EC2),\n" +
			"or runs the whole system on this machine in local mode.\n\n" +
			"Exit codes: 0 success, 1 failure, 2 usage (an unknown command or flag, a wrong argument).",
		SilenceUsage: true, SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })
	root.Args = cobra.NoArgs
	root.RunE = func(c *cobra.Command, _ []string) error {
		_ = c.Help()
		return usageError{"no command given"}
	}
	for _, s := range commands() {
		root.AddCommand(command(s))
	}
	for _, name := range []string{"events", "local"} {
		g := &cobra.Command{Use: name, Short: groupShort[name], SilenceUsage: true, SilenceErrors: true,
			Args: cobra.NoArgs, RunE: func(c *cobra.Command, _ []string) error {
				_ = c.Help()
				return usageError{name + " needs a subcommand"}
			}}
		for _, s := range groups()[name] {
			g.AddCommand(command(s))
		}
		root.AddCommand(g)
	}
	root.CompletionOptions.HiddenDefaultCmd = false
	return root
}

// command builds one cobra command from its spec: the flags it defines, and its work.
func command(s spec) *cobra.Command {
	c := &cobra.Command{Use: s.use, Short: s.short, Long: s.long, SilenceUsage: true, SilenceErrors: true}
	want := len(strings.Fields(s.use)) - 1
	c.Args = func(c *cobra.Command, args []string) error {
		if len(args) != want {
			return usageError{fmt.Sprintf("usage: %s %s (%d argument(s), got %d)", c.Parent().CommandPath(), s.use, want, len(args))}
		}
		return nil
	}
	c.Flags().SortFlags = false
	run := s.define(c.Flags())
	c.RunE = func(c *cobra.Command, args []string) error {
		return run(c.Context(), args, c.OutOrStdout(), c.ErrOrStderr())
	}
	if s.complete != nil {
		c.ValidArgsFunction = func(c *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return s.complete(c.Context(), c.Flags()), cobra.ShellCompDirectiveNoFileComp
		}
	}
	return c
}

func all(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, sub := range c.Commands() {
		out = append(out, all(sub)...)
	}
	return out
}

// outputFlag defines --output: table or json, refused at parse time otherwise (a usage error).
func outputFlag(fs *pflag.FlagSet) *string {
	v := outputFormat("table")
	fs.Var(&v, "output", "table or json")
	return (*string)(&v)
}

type outputFormat string

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "table|json" }
func (o *outputFormat) Set(s string) error {
	if s != "table" && s != "json" {
		return fmt.Errorf("%q is not table or json", s)
	}
	*o = outputFormat(s)
	return nil
}

// exitCode is 2 for usage mistakes and 1 for everything else.
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

// usageError marks a mistake in how the command was called.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// modelNames completes a MODEL: the catalog's names.
func modelNames(context.Context, *pflag.FlagSet) []string {
	var names []string
	for _, m := range catalog.Default().Models {
		names = append(names, m.Name)
	}
	return names
}

// deploymentIDs completes an ID: the deployments the stack's cluster runs, read with the AWS flags typed so far
// (nothing when they cannot be read within a few seconds).
func deploymentIDs(ctx context.Context, typed *pflag.FlagSet) []string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	fs := pflag.NewFlagSet("complete", pflag.ContinueOnError)
	af := addAWSFlags(fs)
	typed.Visit(func(f *pflag.Flag) {
		if fs.Lookup(f.Name) != nil {
			_ = fs.Set(f.Name, f.Value.String())
		}
	})
	c, err := connect(ctx, af, outCluster, outScheduleGroup)
	if err != nil {
		return nil
	}
	ds, err := listDeployments(ctx, c.ECS, c.Scheduler, c.Outputs[outCluster], c.Outputs[outScheduleGroup], "", time.Now(), true, nil)
	if err != nil {
		return nil
	}
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.DeploymentID)
	}
	return ids
}
