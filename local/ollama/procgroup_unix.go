//go:build unix

package ollama

import "syscall"

// signalGroup sends sig to every process in group pgid. Errors are ignored:
// ESRCH means nothing is left, which is what the callers want.
func signalGroup(pgid int, sig syscall.Signal) {
	if pgid <= 1 { // -0 is our own group and -1 is every process
		return
	}
	_ = syscall.Kill(-pgid, sig)
}
