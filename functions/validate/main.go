// Command validate is the "Validate request" step.
package main

import "github.com/ollama-ecs/ollama-ecs/functions/steps"

func main() { steps.Start("validate", steps.ValidateHandler) }
