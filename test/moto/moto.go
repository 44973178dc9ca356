// Package moto starts moto_server, a real AWS API emulator, on a loopback port for tests of the SDK adapters:
// the requests the handlers build go over the wire and come back as the SDK parses them.
package moto

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/ollama-ecs/ollama-ecs/test/tools"
)

// Region is the region every test client uses.
const Region = "us-east-1"

// Server is one running moto_server.
type Server struct {
	URL string
	cmd *exec.Cmd
}

// Start runs moto_server on 127.0.0.1 and stops it when the test ends. A missing moto_server fails the test under
// CI (tools.Require), where it is always installed.
func Start(t testing.TB) *Server {
	t.Helper()
	tools.Require(t, tools.Moto)
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = nil, nil
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting moto_server: %v", err)
	}
	s := &Server{URL: fmt.Sprintf("http://127.0.0.1:%d", port), cmd: cmd}
	t.Cleanup(s.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			s.holdTasks(t)
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("moto_server did not answer on %s within 30s: %v", s.URL, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *Server) stop() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Reset drops all of moto's state, so each test starts from an empty account.
func (s *Server) Reset(t testing.TB) {
	t.Helper()
	resp, err := http.Post(s.URL+"/moto-api/reset", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s.holdTasks(t)
}

// holdTasks keeps ECS tasks RUNNING until stopped, as ECS does: by default moto moves a task one status on at
// every DescribeTasks, so a handler that describes a task a few times would see it stop by itself.
func (s *Server) holdTasks(t testing.TB) {
	t.Helper()
	resp, err := http.Post(s.URL+"/moto-api/state-manager/set-transition", "application/json",
		strings.NewReader(`{"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1000000}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("moto state manager: %s", resp.Status)
	}
}

// Config is an SDK configuration that sends every service to this server with dummy credentials.
func (s *Server) Config() aws.Config {
	return aws.Config{
		Region:       Region,
		Credentials:  credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		BaseEndpoint: aws.String(s.URL),
		// Tests should fail fast, not back off through moto's occasional 5xx for unimplemented calls.
		RetryMaxAttempts: 1,
		HTTPClient:       &http.Client{Transport: ecsShapeFix{next: http.DefaultTransport}},
	}
}

// Context is a test context bounded to a minute.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
