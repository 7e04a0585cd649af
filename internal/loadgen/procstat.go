package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// ClockTicks is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which Linux fixes at 100 for user space on every architecture Go
// supports (it is not the kernel's CONFIG_HZ).
const ClockTicks = 100

// ProcSample is one reading of a process's CPU time and resident memory.
type ProcSample struct {
	// PID is the process read.
	PID int
	// CPU is the process's user plus system CPU time so far.
	CPU time.Duration
	// RSS is its resident set size (VmRSS), in bytes.
	RSS int64
	// At is when the sample was taken.
	At time.Time
}

// ErrProcFormat is wrapped by ReadProc when a /proc file is not laid out
// as expected.
var ErrProcFormat = errors.New("loadgen: unexpected /proc format")

// ReadProc reads /proc/<pid>/stat (utime + stime) and /proc/<pid>/status
// (VmRSS). It works on Linux only; elsewhere it returns the error of
// opening /proc.
func ReadProc(pid int) (ProcSample, error) {
	at := time.Now()
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcSample{}, fmt.Errorf("loadgen: server pid %d: %w", pid, err)
	}
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return ProcSample{}, fmt.Errorf("loadgen: server pid %d: %w", pid, err)
	}
	ticks, err := parseStatTicks(stat)
	if err != nil {
		return ProcSample{}, fmt.Errorf("loadgen: server pid %d: %w", pid, err)
	}
	rss, err := parseStatusRSS(status)
	if err != nil {
		return ProcSample{}, fmt.Errorf("loadgen: server pid %d: %w", pid, err)
	}
	return ProcSample{PID: pid, CPU: time.Duration(ticks) * time.Second / ClockTicks, RSS: rss, At: at}, nil
}

// parseStatTicks returns utime + stime (fields 14 and 15 of proc(5)) from
// the contents of /proc/<pid>/stat. The command name (field 2) is in
// parentheses and may itself hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseStatTicks(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: stat has no command name", ErrProcFormat)
	}
	fields := bytes.Fields(stat[i+1:])
	// fields[0] is field 3 (state), so field n is fields[n-3].
	const utime, stime = 14 - 3, 15 - 3
	if len(fields) <= stime {
		return 0, fmt.Errorf("%w: stat has %d fields after the command name, want more than %d", ErrProcFormat, len(fields), stime)
	}
	u, err := strconv.ParseUint(string(fields[utime]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: utime: %w", ErrProcFormat, err)
	}
	s, err := strconv.ParseUint(string(fields[stime]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: stime: %w", ErrProcFormat, err)
	}
	return u + s, nil
}

// parseStatusRSS returns VmRSS, in bytes, from the contents of
// /proc/<pid>/status ("VmRSS:    12345 kB").
func parseStatusRSS(status []byte) (int64, error) {
	for line := range bytes.SplitSeq(status, []byte{'\n'}) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("%w: VmRSS line %q", ErrProcFormat, line)
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: VmRSS: %w", ErrProcFormat, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("%w: status has no VmRSS (a zombie or kernel thread?)", ErrProcFormat)
}
