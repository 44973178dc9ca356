package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/ollama-ecs/ollama-ecs/events"
)

// validation is the verdict on one event file.
type validation struct {
	File         string `json:"file"`
	Valid        bool   `json:"valid"`
	Kind         string `json:"kind,omitempty"`
	DeploymentID string `json:"deploymentId,omitempty"`
	Model        string `json:"model,omitempty"`
	Schema       string `json:"schema,omitempty"`
	Error        string `json:"error,omitempty"`
}

func defineEventsValidate(fs *pflag.FlagSet) runner {
	prefix := fs.String("prefix", envOr("OLLAMA_ECS_MODEL_PREFIX", "models/"), "the model prefix uploads must sit under")
	bucket := fs.String("bucket", os.Getenv("OLLAMA_ECS_BUCKET"), "the only bucket uploads are accepted from (default: any)")
	execName := fs.String("execution-name", "", "execution name for a direct request without deploymentId")
	output := outputFlag(fs)
	return func(_ context.Context, pos []string, stdout, stderr io.Writer) error {
		var raw []byte
		var err error
		if pos[0] == "-" {
			raw, err = io.ReadAll(io.LimitReader(os.Stdin, events.MaxEventBytes+1))
		} else {
			raw, err = os.ReadFile(pos[0])
		}
		if err != nil {
			return err
		}
		v := validateEvent(pos[0], raw, events.Config{ModelPrefix: *prefix, Bucket: *bucket}, *execName)
		if *output == "json" {
			if err := writeJSON(stdout, v); err != nil {
				return err
			}
		} else if v.Valid {
			line := fmt.Sprintf("%s: valid %s event", v.File, v.Kind)
			if v.Model != "" {
				line += ", model " + v.Model
			}
			if v.DeploymentID != "" {
				line += ", deployment id " + v.DeploymentID
			}
			if v.Schema != "" {
				line += " (also matches " + v.Schema + ")"
			}
			fmt.Fprintln(stdout, line)
		}
		if !v.Valid {
			return fmt.Errorf("%s: %s", v.File, v.Error)
		}
		return nil
	}
}

// validateEvent checks an event as the state machine will (events.Parse is the authority), then its detail against
// the published JSON Schema, so the file is fit for tools outside Go too.
func validateEvent(file string, raw []byte, cfg events.Config, execName string) validation {
	v := validation{File: file}
	in, err := events.Parse(raw, cfg, execName)
	if err != nil {
		v.Error = err.Error()
		return v
	}
	v.Kind, v.DeploymentID = string(in.Kind), in.DeploymentID
	switch {
	case in.Deploy != nil:
		v.Model = in.Deploy.Model
	case in.Upload != nil:
		v.Model = in.Upload.ModelName
	}
	schemaFile, ok := events.SchemaFiles[in.Kind]
	if !ok {
		v.Valid = true
		return v
	}
	detail := raw
	if in.Envelope != nil {
		detail = in.Envelope.Detail
	}
	if err := checkSchema(schemaFile, detail); err != nil {
		v.Error = "parses, but breaks " + schemaFile + ": " + oneLine(err.Error())
		return v
	}
	v.Valid, v.Schema = true, schemaFile
	return v
}

func checkSchema(file string, doc []byte) error {
	raw, err := events.Schemas.ReadFile(file)
	if err != nil {
		return err
	}
	schemaDoc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(file, schemaDoc); err != nil {
		return err
	}
	s, err := c.Compile(file)
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return err
	}
	return s.Validate(inst)
}

func defineEventsSample(fs *pflag.FlagSet) runner {
	fs.String("output", "json", "json (samples are JSON in any case)")
	return func(_ context.Context, pos []string, stdout, stderr io.Writer) error {
		raw, err := events.Sample(events.Kind(strings.ToLower(pos[0])))
		if err != nil {
			return usageError{err.Error()}
		}
		if !json.Valid(raw) {
			return fmt.Errorf("sample %s is not JSON", pos[0])
		}
		_, err = fmt.Fprintf(stdout, "%s\n", raw)
		return err
	}
}
