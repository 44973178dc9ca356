// Command waker is the load balancer's target for sleeping deployments: a request starts the deployment again
// through the state machine and is answered 503 with Retry-After.
package main

import "github.com/ollama-ecs/ollama-ecs/functions/steps"

func main() { steps.Start("waker", steps.WakerHandler) }
