// Command health is the "Poll health" step; it runs in the VPC to reach the task's private address.
package main

import "github.com/ollama-ecs/ollama-ecs/functions/steps"

func main() { steps.Start("health", steps.HealthHandler) }
