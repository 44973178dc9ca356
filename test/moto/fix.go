package moto

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// ecsShapeFix corrects one known deviation of moto 5.2 from the ECS API: a task's containers carry "cpu" and
// "memory" as JSON numbers, where the API (and so the Go SDK's strict deserializer) has strings. Without it every
// RunTask and DescribeTasks answer fails to parse. Nothing else in any answer is touched.
type ecsShapeFix struct{ next http.RoundTripper }

func (f ecsShapeFix) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := f.next.RoundTrip(req)
	if err != nil || !strings.HasPrefix(req.Header.Get("X-Amz-Target"), "AmazonEC2ContainerServiceV20141113.") {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if json.Unmarshal(body, &doc) == nil {
		var tasks []any
		if ts, ok := doc["tasks"].([]any); ok {
			tasks = ts
		}
		if t, ok := doc["task"]; ok {
			tasks = append(tasks, t)
		}
		for _, t := range tasks {
			task, _ := t.(map[string]any)
			containers, _ := task["containers"].([]any)
			for _, c := range containers {
				container, _ := c.(map[string]any)
				for _, k := range []string{"cpu", "memory", "memoryReservation"} {
					if n, ok := container[k].(float64); ok {
						container[k] = strconv.FormatFloat(n, 'f', -1, 64)
					}
				}
			}
		}
		if fixed, err := json.Marshal(doc); err == nil {
			body = fixed
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return resp, nil
}
