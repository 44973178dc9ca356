package main

import (
	"net"
	"os"
	"testing"
)

// TestMain points the command line's model registry at a closed loopback port: a test that looks up a model the
// catalog does not list gets "could not be reached" at once, and no traffic leaves the machine. Tests that resolve
// in a registry start one and pass it.
func TestMain(m *testing.M) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	os.Setenv("OLLAMA_ECS_REGISTRY", closed)

	os.Exit(m.Run())
}
