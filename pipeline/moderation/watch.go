package moderation

import (
	"context"
	"log/slog"
	"os"
	"time"
)

// DefaultPoll is how often WatchFile looks at a file by default.
const DefaultPoll = 2 * time.Second

// WatchFile calls reload whenever the file at path differs from the
// version loaded (its stamp before it was read, see StatFile), checking
// every interval (DefaultPoll when zero), until ctx is done. A changed file
// is reloaded once it stayed the same for one more interval, so a file
// caught while an editor or a copy is still writing it is never loaded
// half-written. A reload error
// is logged (reload is expected to keep the previous configuration); a file
// that cannot be stat'ed is logged once and watched on. It returns nil when
// ctx is done.
func WatchFile(ctx context.Context, path string, loaded FileStamp, interval time.Duration, log *slog.Logger, reload func() error) error {
	if interval <= 0 {
		interval = DefaultPoll
	}
	if log == nil {
		log = slog.Default()
	}
	last, lastErr := loaded, error(nil)
	// pending is a changed stamp seen once, not yet stable.
	var pending *FileStamp
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		cur, err := StatFile(path)
		if err != nil {
			if lastErr == nil {
				log.Warn("cannot stat watched file", "file", path, "err", err)
			}
			lastErr = err
			continue
		}
		if lastErr == nil && cur == last {
			pending = nil
			continue
		}
		if pending == nil || *pending != cur {
			pending = &cur // changed: wait until it holds still
			continue
		}
		pending = nil
		last, lastErr = cur, nil
		if err := reload(); err != nil {
			log.Error("reload failed; the previous configuration stays in force", "file", path, "err", err)
			continue
		}
		log.Info("reloaded", "file", path)
	}
}

// FileStamp identifies a version of a file.
type FileStamp struct {
	// ModTime is the file's modification time.
	ModTime time.Time
	// Size is its size in bytes.
	Size int64
}

// StatFile returns the stamp of the file at path. Take it before reading
// the file, so that a change during the read is seen as a change.
func StatFile(path string) (FileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return FileStamp{}, err
	}
	return FileStamp{fi.ModTime(), fi.Size()}, nil
}
