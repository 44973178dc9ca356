package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/planner"
)

const (
	// minPartSize is S3's smallest part (all but the last).
	minPartSize = 5 << 20
	// maxParts is S3's largest part count.
	maxParts = 10000
)

// findExecutionTimeout bounds how long --follow waits for S3 and EventBridge to start the execution.
var findExecutionTimeout = 2 * time.Minute

func defineUpload(fs *pflag.FlagSet) runner {
	env := fs.String("env", planner.EnvDev, "dev or prod: the folder under the model prefix")
	name := fs.String("name", "", "model name (default: the file's name without .gguf, or a Modelfile's folder)")
	partMiB := fs.Int("part-size", 64, "multipart part size in MiB (at least 5); larger files go up in parts")
	follow := fs.Bool("follow", false, "wait for the deployment the upload starts and show it live")
	af := addAWSFlags(fs)
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		if *env != "dev" && *env != "prod" {
			return usageError{fmt.Sprintf("--env %q is not dev or prod", *env)}
		}
		if *partMiB < 5 || *partMiB > 5<<10 {
			return usageError{fmt.Sprintf("--part-size %d is outside 5..5120 MiB", *partMiB)}
		}
		file := pos[0]
		modelfile, err := checkModelFile(file)
		if err != nil {
			return err
		}
		need := []string{outBucket, outPrefix}
		if *follow {
			need = append(need, outStateMachine)
		}
		c, err := connect(ctx, af, need...)
		if err != nil {
			return err
		}
		bucket, prefix := c.Outputs[outBucket], c.Outputs[outPrefix]
		key, err := uploadKey(prefix, *env, file, *name, modelfile)
		if err != nil {
			return err
		}
		f, st, err := openUpload(file, bucket, prefix, key)
		if err != nil {
			return err
		}
		defer f.Close()
		var progress io.Writer
		if !af.json() && isTerminal(stderr) {
			progress = stderr
		}
		started := time.Now()
		u := uploader{S3: c.S3, PartSize: int64(*partMiB) << 20, Progress: progress}
		res, err := u.upload(ctx, f, st.Size(), bucket, key)
		if err != nil {
			return err
		}
		if !af.json() {
			fmt.Fprintf(stdout, "uploaded %s to s3://%s/%s (%s", file, bucket, key, sizeText(res.Size))
			if res.Parts > 1 {
				fmt.Fprintf(stdout, " in %d parts", res.Parts)
			}
			fmt.Fprintln(stdout, ")")
		}
		if !*follow {
			if af.json() {
				return writeJSON(stdout, res)
			}
			_, err := fmt.Fprintln(stdout, "S3 starts the deployment; watch it with: ollama-ecs list")
			return err
		}
		if !af.json() {
			fmt.Fprintln(stdout, "waiting for the deployment it starts...")
		}
		x, err := findUploadExecution(ctx, c.SFN, c.Outputs[outStateMachine], events.Config{ModelPrefix: prefix, Bucket: bucket}, res, started)
		if err != nil {
			return err
		}
		sr := startResult{ExecutionArn: x.ARN, StartDate: x.StartDate, Status: x.Status, DeploymentID: x.deploymentID}
		if !af.json() {
			fmt.Fprintf(stdout, "deploying %s as %s\nexecution: %s\n", res.Key, sr.DeploymentID, sr.ExecutionArn)
		}
		fl := &follower{Source: stepFunctions{c.SFN}, Out: stdout, Spinner: isTerminal(stdout), Interval: pollInterval, Quiet: af.json()}
		return followToEnd(ctx, fl, sr, af.json(), stdout)
	}
}

// checkModelFile tells a Modelfile from a GGUF file and refuses anything else before it is uploaded.
func checkModelFile(file string) (modelfile bool, err error) {
	f, err := os.Open(file)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if filepath.Base(file) == "Modelfile" {
		return true, nil
	}
	if !strings.HasSuffix(file, ".gguf") {
		return false, fmt.Errorf("%s is neither a .gguf model nor a file named Modelfile", file)
	}
	magic := make([]byte, 4)
	if _, err := io.ReadFull(f, magic); err != nil || !bytes.Equal(magic, []byte("GGUF")) {
		return false, fmt.Errorf("%s is not a GGUF file (it does not start with GGUF)", file)
	}
	return false, nil
}

// uploadKey is where the file goes: <prefix><env>/<name>.gguf or <prefix><env>/<name>/Modelfile.
func uploadKey(prefix, env, file, name string, modelfile bool) (string, error) {
	if name == "" {
		if modelfile {
			abs, err := filepath.Abs(file)
			if err != nil {
				return "", err
			}
			name = filepath.Base(filepath.Dir(abs))
		} else {
			name = strings.TrimSuffix(filepath.Base(file), ".gguf")
		}
	}
	name = strings.ToLower(name)
	if modelfile {
		return prefix + env + "/" + name + "/Modelfile", nil
	}
	return prefix + env + "/" + name + ".gguf", nil
}

// objectCreatedEvent is the S3 event EventBridge would deliver for the object.
// openUpload opens a model file for upload to bucket/key and makes the check the state machine will make on its
// S3 event (its key, its size), before a byte is sent, on AWS as locally.
func openUpload(file, bucket, prefix, key string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err == nil {
		_, err = events.Parse(objectCreatedEvent(bucket, key, "", st.Size()), events.Config{ModelPrefix: prefix, Bucket: bucket}, "")
		if err != nil {
			err = fmt.Errorf("%s would not deploy: %v", key, err)
		}
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, st, nil
}

func objectCreatedEvent(bucket, key, etag string, size int64) []byte {
	var o events.ObjectCreated
	o.Version = "0"
	o.Bucket.Name = bucket
	o.Object.Key, o.Object.Size, o.Object.ETag = key, size, etag
	detail, _ := json.Marshal(o)
	raw, _ := json.Marshal(events.Envelope{
		Version: "0", ID: "cli-check", DetailType: events.DetailTypeObjectCreated, Source: events.SourceS3,
		Time: time.Now().UTC(), Resources: []string{}, Detail: detail,
	})
	return raw
}

// uploadResult is what was put where.
type uploadResult struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	ETag   string `json:"etag"`
	Parts  int    `json:"parts"`
}

// uploader puts a file into S3: one PutObject up to one part's size, a multipart upload above it (aborted on
// failure, so no parts are left to pay for), with a progress bar when Progress is set.
type uploader struct {
	S3       ObjectUploader
	PartSize int64
	Progress io.Writer
}

func (u uploader) upload(ctx context.Context, r io.ReaderAt, size int64, bucket, key string) (uploadResult, error) {
	res := uploadResult{Bucket: bucket, Key: key, Size: size, Parts: 1}
	part := max(u.PartSize, minPartSize)
	for size/part >= maxParts {
		part *= 2
	}
	bar := &progressBar{W: u.Progress, Total: size}
	if size <= part {
		out, err := u.S3.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(bucket), Key: aws.String(key), ContentLength: aws.Int64(size),
			Body: io.NewSectionReader(r, 0, size),
		})
		if err != nil {
			return res, u.s3Err("s3:PutObject", bucket, err)
		}
		bar.add(size)
		bar.done()
		res.ETag = strings.Trim(aws.ToString(out.ETag), `"`)
		return res, nil
	}
	mp, err := u.S3.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return res, u.s3Err("s3:CreateMultipartUpload", bucket, err)
	}
	abort := func(err error) (uploadResult, error) {
		// A fresh context: the upload's may be what was cancelled.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_, _ = u.S3.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key), UploadId: mp.UploadId})
		bar.done()
		return res, err
	}
	var parts []s3types.CompletedPart
	for n, off := int32(1), int64(0); off < size; n, off = n+1, off+part {
		length := min(part, size-off)
		out, err := u.S3.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: aws.String(bucket), Key: aws.String(key), UploadId: mp.UploadId, PartNumber: aws.Int32(n),
			ContentLength: aws.Int64(length), Body: io.NewSectionReader(r, off, length),
		})
		if err != nil {
			return abort(u.s3Err("s3:UploadPart", bucket, err))
		}
		parts = append(parts, s3types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(n)})
		bar.add(length)
	}
	out, err := u.S3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(bucket), Key: aws.String(key), UploadId: mp.UploadId,
		MultipartUpload: &s3types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return abort(u.s3Err("s3:CompleteMultipartUpload", bucket, err))
	}
	bar.done()
	res.ETag, res.Parts = strings.Trim(aws.ToString(out.ETag), `"`), len(parts)
	return res, nil
}

func (u uploader) s3Err(op, bucket string, err error) error {
	if isCode(err, "NoSuchBucket") {
		return fmt.Errorf("bucket %q not found: check --stack or --bucket", bucket)
	}
	return awsErr(op, err)
}

// progressBar draws "[=====>    ]  42%  120.0 MiB of 285.3 MiB" on one terminal line.
type progressBar struct {
	W     io.Writer
	Total int64
	sent  int64
}

func (b *progressBar) add(n int64) {
	b.sent += n
	if b.W == nil {
		return
	}
	const width = 30
	pct := 100
	if b.Total > 0 {
		pct = int(b.sent * 100 / b.Total)
	}
	filled := pct * width / 100
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	fmt.Fprintf(b.W, "\r\033[K[%s] %3d%%  %s of %s", bar, pct, sizeText(b.sent), sizeText(b.Total))
}

// reader counts what passes through r (the local upload's stream).
func (b *progressBar) reader(r io.Reader) io.Reader { return &progressReader{r: r, bar: b} }

type progressReader struct {
	r   io.Reader
	bar *progressBar
}

func (p *progressReader) Read(buf []byte) (int, error) {
	n, err := p.r.Read(buf)
	p.bar.add(int64(n))
	return n, err
}

func (b *progressBar) done() {
	if b.W != nil {
		fmt.Fprintln(b.W)
	}
}

func sizeText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// uploadExecution is the execution an upload started, with the deployment id its input maps to.
type uploadExecution struct {
	execution
	deploymentID string
}

// findUploadExecution waits for the execution that S3's event started for this object: its input is an Object
// Created event for the same bucket, key and ETag.
func findUploadExecution(ctx context.Context, api Executions, stateMachine string, cfg events.Config, up uploadResult, since time.Time) (uploadExecution, error) {
	deadline := time.Now().Add(findExecutionTimeout)
	seen := map[string]bool{}
	for {
		in := &sfn.ListExecutionsInput{StateMachineArn: aws.String(stateMachine), MaxResults: 100}
		out, err := api.ListExecutions(ctx, in)
		if err != nil {
			return uploadExecution{}, awsErr("states:ListExecutions", err)
		}
		for _, item := range out.Executions {
			arn := aws.ToString(item.ExecutionArn)
			// Clocks differ a little between this machine and AWS.
			if seen[arn] || aws.ToTime(item.StartDate).Before(since.Add(-time.Minute)) {
				continue
			}
			seen[arn] = true
			d, err := api.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: item.ExecutionArn})
			if err != nil {
				return uploadExecution{}, awsErr("states:DescribeExecution", err)
			}
			parsed, err := events.Parse([]byte(aws.ToString(d.Input)), cfg, aws.ToString(d.Name))
			if err != nil || parsed.Kind != events.KindUpload || parsed.Upload.Bucket != up.Bucket || parsed.Upload.Key != up.Key {
				continue
			}
			var o events.ObjectCreated
			if json.Unmarshal(parsed.Envelope.Detail, &o) != nil || (o.Object.ETag != "" && up.ETag != "" && strings.Trim(o.Object.ETag, `"`) != up.ETag) {
				continue
			}
			x, err := describeExecution(ctx, api, arn)
			if err != nil {
				return uploadExecution{}, err
			}
			return uploadExecution{execution: x, deploymentID: parsed.DeploymentID}, nil
		}
		if time.Now().After(deadline) {
			return uploadExecution{}, fmt.Errorf("no deployment started for s3://%s/%s within %s: check the bucket's EventBridge notifications and the upload rule", up.Bucket, up.Key, findExecutionTimeout)
		}
		select {
		case <-ctx.Done():
			return uploadExecution{}, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}
