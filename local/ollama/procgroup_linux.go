package ollama

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// newProcessGroupAttr puts the server in a process group of its own, so one
// signal reaches it and the runners it spawns, and asks the kernel to kill it
// if this process dies first (a test binary that panics cannot run Stop).
// Pdeathsig fires when the OS thread that started the child exits; Go keeps
// its threads alive unless a goroutine exits while locked to one, so callers
// must not Start from inside runtime.LockOSThread.
func newProcessGroupAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// groupAlive reports whether any process of group pgid is still running.
// Zombies do not count: an orphaned runner is reparented to PID 1, which in a
// container may never reap it, yet it holds no port and runs no code.
func groupAlive(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return syscall.Kill(-pgid, 0) == nil
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		state, gid, ok := parseProcStat(stat)
		if ok && gid == pgid && state != 'Z' && state != 'X' {
			return true
		}
	}
	return false
}

// parseProcStat reads the state and process group from /proc/PID/stat:
// "pid (comm) state ppid pgrp ...". comm may hold spaces and parentheses, so
// parsing starts after the last ')'.
func parseProcStat(stat []byte) (state byte, pgrp int, ok bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, false
	}
	fields := bytes.Fields(stat[i+1:])
	if len(fields) < 3 || len(fields[0]) != 1 {
		return 0, 0, false
	}
	pgrp, err := strconv.Atoi(string(fields[2]))
	if err != nil {
		return 0, 0, false
	}
	return fields[0][0], pgrp, true
}
