package cli

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// reloadOnHangup calls reload on every SIGHUP until ctx is done or stop is
// called, logging the outcome: what names the configuration and file its
// file. A reload that fails is logged at error level; reload must then
// leave the configuration in force unchanged.
func reloadOnHangup(ctx context.Context, log *slog.Logger, what, file string, reload func() error) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGHUP)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-signals:
				if err := reload(); err != nil {
					log.Error(what+" reload failed; the previous configuration stays in force", "file", file, "err", err)
					continue
				}
				log.Info(what+" reloaded", "file", file)
			}
		}
	})
	return func() {
		signal.Stop(signals)
		cancel()
		wg.Wait()
	}
}
