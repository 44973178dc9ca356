// Command image is the "Ensure model image" step: it builds the model's image in ECR when there is none.
package main

import "github.com/ollama-ecs/ollama-ecs/functions/steps/modelimage"

func main() { modelimage.Start() }
