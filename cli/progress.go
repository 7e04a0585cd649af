package cli

import (
	"time"

	"github.com/schollz/progressbar/v3"
)

// progressThreshold is the number of entries from which a read shows a
// progress bar (when stderr is a terminal and stdout is not).
const progressThreshold = 2000

// progress is a progress bar on stderr for long reads, or nothing.
type progress struct {
	bar *progressbar.ProgressBar
}

// newProgress shows a bar of total steps when io.Terminal is set and total
// reaches progressThreshold.
func newProgress(tio toolIO, total int64, what string) *progress {
	if !tio.Terminal || total < progressThreshold {
		return &progress{}
	}
	return &progress{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(tio.Stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)}
}

// set moves the bar to n (capped at its total: streams grow while read).
func (p *progress) set(n int64) {
	if p.bar != nil {
		_ = p.bar.Set64(min(n, p.bar.GetMax64())) // rendering to stderr is best effort
	}
}

// done removes the bar.
func (p *progress) done() {
	if p.bar != nil {
		_ = p.bar.Finish() // rendering to stderr is best effort
	}
}
