// Command autostop is the "Schedule auto-stop" step.
package main

import "github.com/ollama-ecs/ollama-ecs/functions/steps"

func main() { steps.Start("autostop", steps.AutoStopHandler) }
