// Command cleanup is the "Clean up" and "Release placement" steps.
package main

import "github.com/ollama-ecs/ollama-ecs/functions/steps"

func main() { steps.Start("cleanup", func(s *steps.Set) any { return s.Cleanup.Handle }) }
