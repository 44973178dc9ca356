// Command teardown is the teardown function: every dev deployment on the scheduled teardown, one on a Stop Request, the cluster's stopped tasks (interruptions), and the stack's deletion.
package main

import "github.com/ollama-ecs/ollama-ecs/functions/steps"

func main() { steps.Start("teardown", steps.TeardownHandler) }
