package cloud

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// fakeRunner starts fakeProcesses: no real process, so placement and lifecycle tests run in milliseconds.
type fakeRunner struct {
	startErr error
	mu       sync.Mutex
	started  []Container
}

var fakePIDs atomic.Int64

func (r *fakeRunner) Start(ctx context.Context, c Container) (Process, error) {
	if r.startErr != nil {
		return nil, r.startErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.started = append(r.started, c)
	r.mu.Unlock()
	p := &fakeProcess{pid: int(fakePIDs.Add(1)), exited: make(chan struct{})}
	go func() {
		// The container's start script: the stages a real runner reports.
		for _, s := range []Stage{StageFetching, StageLoading, StageLoaded} {
			if c.Stage(s) {
				p.exit(137, "killed by signal 9")
				return
			}
		}
		if c.Env["FAKE_MODEL_ERROR"] != "" {
			p.exit(1, c.Env["FAKE_MODEL_ERROR"])
		}
	}()
	return p, nil
}

type fakeProcess struct {
	pid    int
	exited chan struct{}
	once   sync.Once
	mu     sync.Mutex
	code   int
	reason string
}

func (p *fakeProcess) exit(code int, reason string) {
	p.once.Do(func() {
		p.mu.Lock()
		p.code, p.reason = code, reason
		p.mu.Unlock()
		close(p.exited)
	})
}

func (p *fakeProcess) Endpoint() string        { return fmt.Sprintf("http://127.0.0.1:%d", 40000+p.pid) }
func (p *fakeProcess) PID() int                { return 0 }
func (p *fakeProcess) Exited() <-chan struct{} { return p.exited }
func (p *fakeProcess) Kill()                   { p.exit(137, "killed by signal 9") }
func (p *fakeProcess) Stop(context.Context) error {
	p.exit(143, "")
	return nil
}
func (p *fakeProcess) ExitCode() int { p.mu.Lock(); defer p.mu.Unlock(); return p.code }
func (p *fakeProcess) Reason() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

var errFakeStart = errors.New("image pull failed")
