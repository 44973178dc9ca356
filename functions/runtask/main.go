// Command runtask is the "Run ECS task" step.
package main

import "github.com/ollama-ecs/ollama-ecs/functions/steps"

func main() { steps.Start("runtask", steps.RunTaskHandler) }
