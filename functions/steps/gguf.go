package steps

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/catalog/gguf"
	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// readGGUFModel sizes an uploaded GGUF from its header alone, read with ranged GETs: a bad header is a
// NotGGUFError, an S3 failure the typed AWS error (a throttled read stays retryable).
func readGGUFModel(ctx context.Context, s3c deployment.ObjectReader, bucket, key string, size int64, name string) (catalog.Model, error) {
	fetch := func(ctx context.Context, start, end int64) ([]byte, error) {
		out, err := s3c.GetObject(ctx, &s3.GetObjectInput{
			Bucket: aws.String(bucket), Key: aws.String(key), Range: aws.String(fmt.Sprintf("bytes=%d-%d", start, end)),
		})
		if err != nil {
			return nil, deployment.AWSError("s3:GetObject", err)
		}
		defer out.Body.Close()
		return io.ReadAll(io.LimitReader(out.Body, end-start+1))
	}
	m, _, err := gguf.ReadModel(ctx, fetch, size, name)
	var bad *gguf.HeaderError
	if errors.As(err, &bad) {
		return catalog.Model{}, &deployment.NotGGUFError{Key: key, Reason: bad.Reason}
	}
	return m, err
}
