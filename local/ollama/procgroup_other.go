//go:build unix && !linux

package ollama

import "syscall"

// newProcessGroupAttr puts the server in a process group of its own, so one
// signal reaches it and the runners it spawns.
func newProcessGroupAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// groupAlive reports whether any process of group pgid still exists.
func groupAlive(pgid int) bool {
	return syscall.Kill(-pgid, 0) == nil
}
