// Command capacity is the "Check EC2 capacity" step: it checks one candidate of the fallback ladder.
package main

import "github.com/ollama-ecs/ollama-ecs/functions/steps"

func main() { steps.Start("capacity", steps.CapacityHandler) }
