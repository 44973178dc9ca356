package lambdaapi

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// APIError is a failure of the Invoke API itself, as opposed to an error
// returned by the function. An SDK client reads Type from the
// X-Amzn-Errortype header; Step Functions reports it as "Lambda." + Type.
type APIError struct {
	Status  int    // HTTP status, e.g. 500 or 429
	Type    string // Lambda error code, e.g. ServiceException
	Message string
}

func (e *APIError) Error() string { return e.Type + ": " + e.Message }

// ServiceException is Lambda's "internal service error" answer (HTTP 500).
func ServiceException(message string) *APIError {
	return &APIError{Status: http.StatusInternalServerError, Type: "ServiceException", Message: message}
}

// TooManyRequests is Lambda's throttling answer (HTTP 429).
func TooManyRequests(message string) *APIError {
	return &APIError{Status: http.StatusTooManyRequests, Type: "TooManyRequestsException", Message: message}
}

// writeAPIError answers like Lambda: the code in X-Amzn-Errortype and a JSON
// body with Type (User or Service) and message.
func writeAPIError(w http.ResponseWriter, e *APIError) {
	kind := "User"
	if e.Status >= 500 {
		kind = "Service"
	}
	body, _ := json.Marshal(map[string]string{"Type": kind, "message": e.Message})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-Errortype", e.Type)
	if e.Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(1))
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}
