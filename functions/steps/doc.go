// Package steps holds the logic of each Lambda step of the deploy state machine (validate, configure, capacity,
// runtask, health, autostop, cleanup) and of the teardown function. Each step is a struct whose fields are its
// configuration and AWS ports, with a Handle method that aws-lambda-go calls; functions/<name>/main.go only builds
// it (Build). Steps exchange one JSON state document, deployment.State.
package steps
