// Package ws is chatstream's WebSocket edge: the HTTP upgrade, one reader and
// one writer goroutine per connection, the room hub that fans stored messages
// out to local sockets, and the wire protocol's frames.
//
// A message travels one way: a socket's reader decodes a send frame and
// submits it to the pipeline; the pipeline stores it and calls Hub.Reply
// (ack or error to the sender) and, through the backend's feed, Hub.Deliver,
// which encodes the frame once and queues it on every member's bounded send
// queue. Each writer drains its queue in as few WebSocket frames as it can.
package ws
