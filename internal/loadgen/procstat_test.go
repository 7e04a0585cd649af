package loadgen

import (
	"errors"
	"os"
	"testing"
	"time"
)

// TestReadProcSelf reads this test process's own /proc entry.
func TestReadProcSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	// Use some CPU, so that utime has at least one tick (10 ms) to show.
	deadline := time.Now().Add(5 * time.Second)
	var s ProcSample
	for x := 0; ; x++ {
		if x%1_000_000 == 0 {
			var err error
			if s, err = ReadProc(os.Getpid()); err != nil {
				t.Fatal(err)
			}
			if s.CPU > 0 || time.Now().After(deadline) {
				break
			}
		}
	}
	if s.PID != os.Getpid() || s.CPU <= 0 || s.RSS < 1<<20 || s.At.IsZero() {
		t.Errorf("ReadProc(self) = %+v, want CPU time and an RSS of at least 1 MiB", s)
	}
	if _, err := ReadProc(1 << 30); err == nil {
		t.Error("ReadProc of a pid that cannot exist succeeded")
	}
}

// TestParseProc: command names with spaces and parentheses, and malformed
// files.
func TestParseProc(t *testing.T) {
	tail := " S 1 2 3 4 5 6 7 8 9 10 250 17 0 0 20 0 1 0 100 2000 300"
	for _, tc := range []struct {
		stat string
		want uint64
		ok   bool
	}{
		{"1234 (chatstream)" + tail, 267, true},
		{"1234 (a b) c))" + tail, 267, true},
		{"1234 chatstream" + tail, 0, false},
		{"1234 (x) S 1 2", 0, false},
		{"1234 (x) S 1 2 3 4 5 6 7 8 9 10 u 17 0", 0, false},
	} {
		got, err := parseStatTicks([]byte(tc.stat))
		if tc.ok && (err != nil || got != tc.want) {
			t.Errorf("parseStatTicks(%q) = %d, %v; want %d", tc.stat, got, err, tc.want)
		}
		if !tc.ok && !errors.Is(err, ErrProcFormat) {
			t.Errorf("parseStatTicks(%q) = %d, %v; want ErrProcFormat", tc.stat, got, err)
		}
	}
	rss, err := parseStatusRSS([]byte("Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t   12345 kB\nThreads: 4\n"))
	if err != nil || rss != 12345*1024 {
		t.Errorf("parseStatusRSS = %d, %v; want %d", rss, err, 12345*1024)
	}
	for _, bad := range []string{"Name:\tx\n", "VmRSS:\t12 MB\n", "VmRSS:\tlots kB\n"} {
		if _, err := parseStatusRSS([]byte(bad)); !errors.Is(err, ErrProcFormat) {
			t.Errorf("parseStatusRSS(%q) = %v, want ErrProcFormat", bad, err)
		}
	}
}
