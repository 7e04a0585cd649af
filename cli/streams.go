package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/redisstore"
	"github.com/chatstream/chatstream/replay"
)

// deadLetterMaxLen is the dead-letter stream's trimming limit: redisstore's
// default, which serve has no flag for.
const deadLetterMaxLen = 10_000

// streamsCmd reports every stream of a deployment and the instances' lag.
type streamsCmd struct {
	Conn redisFlags `embed:""`

	// Limits are shown, not read from Redis (which does not record them).
	Limits trimFlags `embed:""`
	Format string    `enum:"text,json" default:"text" help:"Output: text tables or one JSON document."`
}

// Run runs the command on the process's streams.
func (c *streamsCmd) Run(g *globals) error {
	return quietPipe(func() error { return c.run(g.Ctx, processIO(g)) })
}

func (c *streamsCmd) run(ctx context.Context, tio toolIO) error {
	if err := c.Limits.Validate(); err != nil {
		return err
	}
	b, err := c.Conn.open(ctx, tio.Log)
	if err != nil {
		return toolError(err)
	}
	defer b.Close()
	r := replay.NewReader(b, replay.Config{Logger: tio.Log})
	room, bus := c.Limits.RoomMaxlen, c.Limits.BusMaxlen
	if room == 0 { // 0 is the default, as on serve
		room = pipeline.DefaultRoomMaxLen
	}
	if bus == 0 {
		bus = redisstore.DefaultBusMaxLen
	}
	rep, err := r.Streams(ctx, replay.Limits{Room: room, Bus: bus, Rejected: deadLetterMaxLen})
	if err != nil {
		return toolError(err)
	}
	if c.Format == "json" {
		enc := json.NewEncoder(tio.Stdout)
		enc.SetIndent("", "  ")
		return toolError(enc.Encode(rep))
	}
	return toolError(writeStreams(tio.Stdout, rep))
}

// writeStreams prints the report as text tables.
func writeStreams(w io.Writer, rep replay.Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(tw, format, args...) } // errors surface at Flush
	p("prefix %s, %d partitions; trimming (MAXLEN ~, as configured by flags): room %d, bus %d, rejected %d\n\n",
		rep.Prefix, rep.Partitions, rep.Limits.Room, rep.Limits.Bus, rep.Limits.Rejected)
	p("STREAM\tKIND\tLENGTH\tADDED\tFIRST\tFIRST TIME\tLAST\tLAST TIME\tMEMORY\tMAXLEN\n")
	rows := append(append(append([]replay.StreamInfo(nil), rep.Buses...), rep.Rooms...), rep.Rejected)
	for _, s := range rows {
		if !s.Exists {
			p("%s\t%s\t0\t0\t-\t-\t-\t-\t-\t%d\n", s.Key, s.Kind, s.MaxLen)
			continue
		}
		p("%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%d\n", s.Key, s.Kind, s.Length, s.EntriesAdded,
			dash(s.FirstID), dash(s.FirstTS), dash(s.LastID), dash(s.LastTS), bytesText(s.MemoryBytes), s.MaxLen)
	}
	p("\n")
	if len(rep.Instances) == 0 {
		p("no running instances\n")
	} else {
		p("INSTANCE\tADDR\tVERSION\tSTARTED\tBUS\tPOSITION\tPOSITION TIME\tLAG\n")
		for _, in := range rep.Instances {
			for _, pos := range in.Positions {
				lag := fmt.Sprint(pos.Lag)
				if pos.LagCapped {
					lag += "+"
				}
				p("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.ID, in.Addr, dash(in.Version), dash(in.StartedAt), pos.Bus, dash(pos.ID), dash(pos.TS), lag)
			}
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// bytesText formats a byte count with a binary unit.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
