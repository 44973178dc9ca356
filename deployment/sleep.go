package deployment

import (
	"strings"

	"github.com/ollama-ecs/ollama-ecs/events"
)

// A dev deployment that auto-stop, the teardown or a stop (without "forget") ends keeps its endpoint: its listener
// rules forward to the waker (a Lambda target of the load balancer) instead of its target group, and a sleep
// record remembers how to start it again. The first request then starts the deployment through the state machine,
// under the same id, and is answered 503 with Retry-After; once the deployment is healthy its rules point at it
// again.
const (
	// TagWake ("true") marks a deployment that sleeps when stopped and wakes on a request; TagWakeCount is the
	// wake its execution is (0 for the first start); TagTTL is the requested time to live in seconds (-1 the
	// environment's default, 0 none), so a wake starts it with the same.
	TagWake      = "ollama-ecs:wake"
	TagWakeCount = "ollama-ecs:wake-count"
	TagTTL       = "ollama-ecs:ttl-seconds"

	// MaxWakeFailures is how many wakes in a row may fail to start before the deployment stops waking (its error
	// is shown to callers and in list instead).
	MaxWakeFailures = 3
	// DefaultWakesPerDay caps the wakes of one deployment per UTC day.
	DefaultWakesPerDay = 24
)

// SleepParameterName is where a sleeping deployment's record is kept (an SSM parameter under the stack's prefix).
func SleepParameterName(prefix, deploymentID string) string {
	return strings.TrimRight(prefix, "/") + "/" + deploymentID
}

// SleepRecord is a sleeping deployment: the request that starts it again, and its wakes.
type SleepRecord struct {
	DeploymentID string `json:"deploymentId"`
	// Request is the deploy request a wake starts.
	Request events.DeployRequest `json:"request"`
	// Asleep is false between a wake's start being served and the next stop.
	Asleep  bool   `json:"asleep"`
	SleptAt string `json:"sleptAt,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Wakes counts every wake; WakesToday those of Day (UTC, yyyy-mm-dd); LastWake is the last one's time.
	Wakes      int    `json:"wakes"`
	WakesToday int    `json:"wakesToday"`
	Day        string `json:"day,omitempty"`
	LastWake   string `json:"lastWake,omitempty"`
	// Execution is the last wake's execution name; Failures counts wakes in a row whose execution failed (Counted
	// is the last one counted), LastError says why.
	Execution string `json:"execution,omitempty"`
	Failures  int    `json:"failures"`
	Counted   string `json:"counted,omitempty"`
	LastError string `json:"lastError,omitempty"`
	// LastStartSeconds is how long the last wake took from the request to serving.
	LastStartSeconds float64 `json:"lastStartSeconds,omitempty"`
	// APIKey says the deployment's route has a key (its wake keeps it).
	APIKey bool `json:"apiKey,omitempty"`
}

// WakeResult is what a wake did.
type WakeResult struct {
	DeploymentID string `json:"deploymentId"`
	// Execution is the wake's execution; Started is false when one was already under way.
	Execution string `json:"execution,omitempty"`
	Started   bool   `json:"started"`
	// RetryAfter is when the deployment should serve, in seconds.
	RetryAfter int `json:"retryAfterSeconds"`
	// Refused says why there is no wake (too many failed starts, the day's cap); Status is the HTTP status a
	// caller gets.
	Refused string `json:"refused,omitempty"`
	Status  int    `json:"status"`
	Message string `json:"message"`
}
