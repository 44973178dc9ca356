// Command cleanup is the "Clean up" and "Release placement" steps.
package main

import "github.com/ollama-ecs/ollama-ecs/functions/steps"

func main() { steps.Start("cleanup", steps.CleanupHandler) }
