package cloud

import (
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/smithy-go"
)

// The local cloud answers with the SDK's own modelled error types where the service has one, so the handlers'
// smithy.APIError classification sees the same codes as on AWS.

func invalidParameter(format string, args ...any) error {
	return &ecstypes.InvalidParameterException{Message: aws.String(fmt.Sprintf(format, args...))}
}

func clientException(format string, args ...any) error {
	return &ecstypes.ClientException{Message: aws.String(fmt.Sprintf(format, args...))}
}

// throttled is the error AWS APIs answer when a caller exceeds its request rate.
func throttled(op string) error {
	return &smithy.GenericAPIError{Code: "ThrottlingException", Message: "Rate exceeded (" + op + ")", Fault: smithy.FaultClient}
}
