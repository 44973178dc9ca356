// Command configure is the "Choose configuration" step.
package main

import "github.com/ollama-ecs/ollama-ecs/functions/steps"

func main() { steps.Start("configure", steps.ConfigureHandler) }
