package cli

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
)

// reloadOnHangup calls reload on every SIGHUP until ctx is done or stop is
// called, logging the outcome: what names the configuration and file its
// file. A reload that fails is logged at error level; reload must then
// leave the configuration in force unchanged.
func reloadOnHangup(ctx context.Context, log *slog.Logger, what, file string, reload func() error) (stop func()) {
	hangupReloaders.Add(1)
	stopSignals := onHangup(ctx, func() {
		if err := reload(); err != nil {
			log.Error(what+" reload failed; the previous configuration stays in force", "file", file, "err", err)
			return
		}
		log.Info(what+" reloaded", "file", file)
	})
	return func() {
		stopSignals()
		hangupReloaders.Add(-1)
	}
}

// hangupReloaders counts the reloadOnHangup handlers in place. Signals
// are the process's, so the count is too.
var hangupReloaders atomic.Int32

// holdHangup keeps SIGHUP from ending the process, its default action,
// until ctx is done or stop is called: serve calls it first, so that a
// SIGHUP before the reloaders are in place, or with none configured,
// changes nothing. A SIGHUP that no reloader takes is logged.
func holdHangup(ctx context.Context, log *slog.Logger) (stop func()) {
	return onHangup(ctx, func() {
		if hangupReloaders.Load() == 0 {
			log.Info("SIGHUP: nothing to reload (--moderation and --rooms-policy files reload on SIGHUP)")
		}
	})
}

// onHangup calls handle, in a goroutine of its own, on every SIGHUP until
// ctx is done or stop is called; stop returns once that goroutine has
// ended.
func onHangup(ctx context.Context, handle func()) (stop func()) {
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
				handle()
			}
		}
	})
	return func() {
		signal.Stop(signals)
		cancel()
		wg.Wait()
	}
}
