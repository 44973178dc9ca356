package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ollama-ecs/ollama-ecs/local"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
	"github.com/ollama-ecs/ollama-ecs/test/tools"
)

// TestConsoleInBrowser drives the console in headless Chromium against a real local stack: deploy from the form
// and watch the execution's graph reach "Deployment ready", stop the deployment from its row, see a bad request
// refused with the deploy command's own error, and a failed execution's error on its failed state.
// OLLAMA_ECS_CONSOLE_SCREENSHOTS=<folder> saves the two pages (docs/ holds the README's).
func TestConsoleInBrowser(t *testing.T) {
	tools.Require(t, tools.Ollama, tools.Engine, tools.Chromium)
	browser, _ := tools.ChromiumPath()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := local.Start(ctx, local.Options{HealthWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close(context.WithoutCancel(ctx)) }()
	model, err := tinymodel.Bytes(tinymodel.Options{Name: "tiny"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Store(ctx, "models/tiny.gguf", model); err != nil {
		t.Fatal(err)
	}
	con, err := newConsole(localConsole{inProcessStack{stack: s, handler: controlHandler(s)}})
	if err != nil {
		t.Fatal(err)
	}
	con.poll = 200 * time.Millisecond
	url, err := listenConsole(ctx, con, "")
	if err != nil {
		t.Fatal(err)
	}

	// A state-changing request from elsewhere (no token, or another site's Origin) is refused.
	for _, h := range []map[string]string{{}, {"X-Console-Token": con.token, "Origin": "http://evil.example"}} {
		req, _ := http.NewRequest(http.MethodPost, url+"api/stop", strings.NewReader(`{"deploymentId":"console-dev"}`))
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("a stop with headers %v: %d, want 403", h, resp.StatusCode)
		}
	}

	// A bad TTL gets the event contract's own message (400), with the page's token.
	req, _ := http.NewRequest(http.MethodPost, url+"api/deploy", strings.NewReader(`{"model":"tiny","ttl":"forever"}`))
	req.Header.Set("X-Console-Token", con.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `ttl: \"forever\" is not a duration`) {
		t.Errorf("a bad TTL: %d %s", resp.StatusCode, body)
	}

	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.Flag("headless", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.NoFirstRun, chromedp.WindowSize(1400, 900))...)
	defer cancelAlloc()
	browserCtx, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	// The first action allocates the browser, under the browser's own context (not a step's timeout).
	if err := chromedp.Do(browserCtx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting %s: %v", browser, err)
	}
	run := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		step, cancel := context.WithTimeout(browserCtx, time.Minute)
		defer cancel()
		if err := chromedp.Do(step, actions...); err != nil {
			if dir := os.Getenv("OLLAMA_ECS_CONSOLE_SCREENSHOTS"); dir != "" {
				png, _ := chromedp.Run(browserCtx, chromedp.FullScreenshot(100))
				_ = os.WriteFile(filepath.Join(dir, "failed.png"), png, 0o644)
			}
			var states []string
			for _, ex := range s.Executions() {
				x, _ := s.Engine.Describe(context.Background(), ex.ExecutionArn)
				states = append(states, x.Name+" "+string(x.Status))
			}
			t.Fatalf("%s: %v (executions: %v)", what, err, states)
		}
	}
	text := func(sel string) string {
		t.Helper()
		step, cancel := context.WithTimeout(browserCtx, time.Minute)
		defer cancel()
		v, err := chromedp.Run(step, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return v
	}
	shots := os.Getenv("OLLAMA_ECS_CONSOLE_SCREENSHOTS")
	screenshot := func(name string) chromedp.Action[chromedp.Void] {
		return func(ctx context.Context, target *chromedp.Target) (chromedp.Void, error) {
			if shots == "" {
				return chromedp.Void{}, nil
			}
			png, err := chromedp.FullScreenshot(100)(ctx, target) // 100: PNG
			if err != nil {
				return chromedp.Void{}, err
			}
			return chromedp.Void{}, os.WriteFile(filepath.Join(shots, name), png, 0o644)
		}
	}

	// Deploy from the form; follow the link to the execution; the graph reaches Deployment ready.
	source := "s3://" + local.Bucket + "/models/tiny.gguf"
	run("deploy from the form",
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(`#deploy-form`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=model]`), "tiny"),
		chromedp.SendKeys(chromedp.CSS(`input[name=source]`), source),
		chromedp.SendKeys(chromedp.CSS(`input[name=deploymentId]`), "console-dev"),
		chromedp.Click(chromedp.CSS(`#deploy-button`)),
		chromedp.WaitVisible(chromedp.CSS(`#started-link`)),
		chromedp.Click(chromedp.CSS(`#started-link`)),
		chromedp.WaitVisible(chromedp.CSS(`#graph`)),
		chromedp.WaitVisible(chromedp.CSS(`#graph g.node.visited[data-state="Deployment ready"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#execution-status.status-SUCCEEDED`)),
		chromedp.Click(chromedp.CSS(`#graph g[data-state="Run ECS task"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#details-name`)),
		screenshot("console-execution.png"),
	)
	if output := text(`#details-output`); !strings.Contains(output, `"taskArn"`) {
		t.Errorf("Run ECS task's output in the details: %q", output)
	}

	// The deployments page lists it with its endpoint; Stop puts it to sleep (a dev deployment keeps its endpoint).
	run("stop from the deployments page",
		chromedp.Navigate(url+"#/"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="console-dev"] button.stop`)),
		screenshot("console-deployments.png"),
		chromedp.Click(chromedp.CSS(`tr[data-id="console-dev"] button.stop`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-id="console-dev"] td.status`)),
		chromedp.Poll[chromedp.Void](`document.querySelector('tr[data-id="console-dev"] td.status').textContent === 'SLEEPING'`),
	)

	// fillForm sets the deploy form's fields as a person would leave them.
	fillForm := func(model, source, id string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](fmt.Sprintf(`(() => { const f = document.getElementById('deploy-form');
			f.model.value = %q; f.source.value = %q; f.deploymentId.value = %q; return true; })()`, model, source, id))
	}

	// A request the deploy command would refuse is refused with its error, and nothing starts.
	before := len(s.Executions())
	run("a bad request from the form",
		fillForm("llama9:70b", "", ""),
		chromedp.Click(chromedp.CSS(`#deploy-button`)),
		chromedp.WaitVisible(chromedp.CSS(`#deploy-result.error`)),
	)
	if refused := text(`#deploy-result`); !strings.Contains(refused, `unknown model "llama9:70b"`) || len(s.Executions()) != before {
		t.Errorf("bad request: %q, %d executions started", refused, len(s.Executions())-before)
	}

	// A failed execution shows its error on the state that failed.
	run("a failed execution: started from the form",
		fillForm("broken", "s3://"+local.Bucket+"/models/missing.gguf", "console-bad"),
		chromedp.Click(chromedp.CSS(`#deploy-button`)),
		chromedp.WaitVisible(chromedp.CSS(`#started-link`)),
		chromedp.Click(chromedp.CSS(`#started-link`)),
	)
	run("a failed execution: its page",
		chromedp.WaitVisible(chromedp.CSS(`#execution-status.status-FAILED`)),
		chromedp.WaitVisible(chromedp.CSS(`#graph g.node.failed[data-state="Request rejected"]`)),
		chromedp.Click(chromedp.CSS(`#graph g[data-state="Validate request"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#details-error`)),
	)
	if stateError := text(`#details-error`); !strings.Contains(stateError, "NotGGUFError") {
		t.Errorf("the failed state's error: %q", stateError)
	}
}
