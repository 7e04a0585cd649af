// Command chatload is chatstream's load generator: real WebSocket clients
// spread over one or more gateways, sending at a fixed rate for a bounded
// time and count, reporting delivery throughput and latency percentiles.
//
//	chatload --url http://127.0.0.1:8081,http://127.0.0.1:8082 --conns 1000 --rate 200 --duration 10s
//
// Run the gateways with a --frame-rate that allows rate/senders per sender.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/chatstream/chatstream/internal/loadgen"
)

type cli struct {
	URL         string        `default:"http://127.0.0.1:8080" help:"Gateway base URLs, comma separated (loopback only)."`
	Conns       int           `default:"100" help:"Receiving connections."`
	Rooms       int           `default:"1" help:"Rooms the connections are spread over."`
	Senders     int           `default:"10" help:"Sending connections."`
	Rate        float64       `default:"100" help:"Messages per second, in total."`
	Duration    time.Duration `default:"10s" help:"Length of the sending phase (at most 10m)."`
	MaxMessages int           `default:"100000" help:"Most messages sent."`
	TextSize    int           `default:"64" help:"Approximate text size in bytes."`
}

func main() {
	var c cli
	kong.Parse(&c, kong.Name("chatload"), kong.Description("Load generator for chatstream gateways."))
	if c.Duration > 10*time.Minute {
		fmt.Fprintln(os.Stderr, "chatload: --duration is capped at 10m")
		os.Exit(2)
	}
	urls := strings.Split(c.URL, ",")
	for _, u := range urls {
		if !loopback(u) {
			fmt.Fprintf(os.Stderr, "chatload: %s is not a loopback address; load is only sent to this machine\n", u)
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := loadgen.Run(ctx, loadgen.Config{
		URLs: urls, Conns: c.Conns, Rooms: c.Rooms, Senders: c.Senders, Rate: c.Rate,
		Duration: c.Duration, MaxMessages: c.MaxMessages, TextSize: c.TextSize,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "chatload:", err)
		os.Exit(1)
	}
	fmt.Println(res)
}

func loopback(u string) bool {
	for _, p := range []string{"http://127.", "http://localhost:", "http://[::1]:"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}
