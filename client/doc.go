// Package client is a Go client of the chatstream WebSocket protocol v1
// (docs/PROTOCOL.md) for bots and services. It keeps one connection open,
// reconnects with backoff, resumes every room without gaps or duplicates,
// and matches every send to its ack.
//
//	c, err := client.Dial(ctx, client.Config{URL: "http://localhost:8080", User: "bot"})
//	if err != nil {
//		return err
//	}
//	defer c.Close()
//	if err := c.Join(ctx, "lobby", client.JoinOptions{History: 0}); err != nil {
//		return err
//	}
//	for m := range c.Messages() {
//		if _, err := c.Send(ctx, m.Room, "seen: "+m.Text); err != nil {
//			var refused *client.Error
//			if errors.As(err, &refused) { ... refused.Code, refused.RetryAfter ... }
//		}
//	}
//	return c.Err()
//
// # Goroutines
//
// A client runs one goroutine for its life (run: it dials, reads every
// connection and waits out the backoff) and one writer per connection (it
// writes every data frame within Config.FrameRate and pings). Both end on
// Close or when Dial's ctx ends; Close returns once they have. Methods are
// safe for concurrent use; they share one mutex with the reader, and no
// method blocks while holding it.
//
// # Receiving, and a slow consumer
//
// Room events (messages, resets, gaps, lost rooms) arrive in order on one
// bounded channel, Events (or the Messages iterator). The client never
// blocks on that channel, so a consumer that calls Send between receives
// cannot stall the acks it waits for. When an event of a room does not
// fit, the room falls behind: the client drops its further events (counted
// in Stats.Deferred) and, once the channel is at least half empty again,
// joins the room again with since = the last message it delivered. The
// consumer gets every message exactly once and in order, only later; the
// server never sees a slow reader.
//
// # Resuming
//
// Per room the client remembers the last seq it delivered, the room's
// epoch and the most recent seqs (Config.SeenPerRoom). After a reconnect
// it joins every room with since and epoch, so the server returns what was
// missed, and it drops any message it has already delivered. A joined or
// history reply marked "more" is completed by paging back with history
// requests (before the oldest message held, after since) before anything
// of it is delivered. A joined reply marked "reset" means the room's stored
// data was lost: the client delivers an EventReset, forgets the room's seqs
// and delivers the new history as the room's state. A "truncated" resume
// is an EventGap.
//
// # Sending
//
// Send waits for the ack. Each send has a ref unique to the client, and a
// send written again (after a reconnect, rate_limited, unavailable or
// internal) carries its original ref, so a server that stored it already
// acks the original instead of storing it twice (PROTOCOL.md §6.3). A send
// on the wire when its connection was lost is written again only if the
// rejoined room's history does not show it stored (§11.3). Sends of one
// room are written in call order.
//
// # Closing
//
// The client reconnects after every close and network failure, with
// exponential backoff and full jitter bounded by Config.MaxBackoff; that
// includes 1000, 1001 (going away), 1008 (too slow, or flooding), 1009
// (the send with the largest frame fails with CodeTooLarge first) and 1012
// (resync). Two codes are reserved for authentication: 4001 (unauthorized)
// stops the client with ErrUnauthorized, and 4002 (token expired)
// reconnects with a fresh Config.Token after the shortest backoff. An HTTP 401 handshake stops
// the client too, as does any other permanent 4xx (see HandshakeError).
package client
