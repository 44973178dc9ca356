// Command ollama-ecs plans, deploys and inspects Ollama model servers on AWS ECS, or runs the whole system on
// this machine in local mode.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// command is one subcommand: its name, a one-line summary and the function that runs it.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"plan", "size a model and rank where it can run, cheapest first", runPlan},
		{"deploy", "start a deployment on AWS (--follow to watch it)", runDeploy},
		{"list", "list running deployments with uptime, cost so far and auto-stop", runList},
		{"stop", "stop a deployment's task and delete its auto-stop schedule", runStop},
		{"history", "show a deployment's execution history as the console does", runHistory},
		{"upload", "upload a GGUF model or Modelfile, which deploys it", runUpload},
		{"events", "validate event files or print samples of each kind", runEvents},
		{"local", "run the whole system on this machine (local demo)", runLocal},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "ollama-ecs:", err)
		}
		os.Exit(exitCode(err))
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

var errUsage = errors.New("no command given")

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: ollama-ecs COMMAND [ARGS] [FLAGS]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'ollama-ecs COMMAND -h' for a command's flags.")
}

// exitCode is 2 for usage mistakes and 1 for everything else.
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, errUsage) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

// usageError marks a mistake in how the command was called.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// parseArgs parses flags that may come before, between or after positional arguments, as users type them
// ("plan llama2:7b --env prod"), and returns the positional arguments.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}
