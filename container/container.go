// Package container holds the entry scripts of a model task's two containers, in real shell files (tested with a
// stub ollama) rather than Go string literals. ECS runs them as `/bin/sh -c <script>`: the CDK stack reads these
// files into its task definitions, and the local runner runs the same scripts with the real ollama binary.
package container

import _ "embed"

var (
	// OllamaEntry starts `ollama serve`, gets the model named by OLLAMA_ECS_SOURCE unless the image already holds
	// it, and loads it.
	//go:embed ollama-entry.sh
	OllamaEntry string
	// FetchEntry is the init container's: it copies an uploaded GGUF to the volume the ollama container reads.
	//go:embed fetch-entry.sh
	FetchEntry string
)
