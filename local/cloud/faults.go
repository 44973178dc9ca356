package cloud

import (
	"sync"
)

// Faults makes the local cluster misbehave on purpose, for reliability tests. Each hook arms the next calls or
// tasks; all are safe to call concurrently with the cluster's use.
type Faults struct {
	mu        sync.Mutex
	throttles int
	refusals  []string
	crashes   []Stage
	hangs     int
	stalls    int
}

// ThrottleRunTask makes the next n RunTask calls fail with a ThrottlingException API error.
func (f *Faults) ThrottleRunTask(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.throttles += n
}

// RefuseRunTask makes the next n RunTask calls place nothing and answer a failure with reason (e.g.
// "RESOURCE:GPU"; empty means Fargate's "Capacity is unavailable at this time...").
func (f *Faults) RefuseRunTask(n int, reason string) {
	if reason == "" {
		reason = "Capacity is unavailable at this time. Please try again later or in a different availability zone"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.refusals = append(f.refusals, reason)
	}
}

// CrashNextTask makes the next task started crash at stage: at StagePending it fails to start
// (TaskFailedToStart); at a later stage its process is killed there (EssentialContainerExited, exit 137).
// Calls queue up, one per task.
func (f *Faults) CrashNextTask(stage Stage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.crashes = append(f.crashes, stage)
}

// HangNextTasks makes the next n tasks stay PENDING until stopped.
func (f *Faults) HangNextTasks(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hangs += n
}

// StallProvisioning makes the next n tasks stay PROVISIONING until stopped, as a task does whose instance never
// comes (with no failed launch activity to say so).
func (f *Faults) StallProvisioning(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stalls += n
}

func (f *Faults) runTaskError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.throttles > 0 {
		f.throttles--
		return throttled("ecs:RunTask")
	}
	return nil
}

func (f *Faults) runTaskRefusal() (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.refusals) == 0 {
		return "", false
	}
	r := f.refusals[0]
	f.refusals = f.refusals[1:]
	return r, true
}

func (f *Faults) nextTaskFaults() (crashAt Stage, hang, stall bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stalls > 0 {
		f.stalls--
		stall = true
	}
	if len(f.crashes) > 0 {
		crashAt, f.crashes = f.crashes[0], f.crashes[1:]
	}
	if f.hangs > 0 {
		f.hangs--
		hang = true
	}
	return crashAt, hang, stall
}
