package client

import (
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Error codes of error frames (docs/PROTOCOL.md §9). The client's own
// checks use the same codes for the same conditions (a send to a room never
// joined is CodeNotJoined, a frame over Config.MaxFrameBytes CodeTooLarge).
// Later servers may send codes not listed here; treat them like
// CodeInternal.
const (
	CodeBadFrame    = "bad_frame"
	CodeTooLarge    = "too_large"
	CodeInvalid     = "invalid"
	CodeNotJoined   = "not_joined"
	CodeRateLimited = "rate_limited"
	CodeRejected    = "rejected"
	CodeUnavailable = "unavailable"
	CodeRoomLimit   = "room_limit"
	CodeInternal    = "internal"
	// CodeUnauthorized (protocol v1.1) is a token the server refused or
	// a frame before authenticating; a refused first token is followed by
	// close 4001, which stops the client with ErrUnauthorized.
	CodeUnauthorized = "unauthorized"
	// CodeForbidden (protocol v1.1) is a join or send the token's rooms
	// or the server's rooms policy do not allow; retrying does not help.
	CodeForbidden = "forbidden"
)

// Error is a refusal: an error frame of the server, or the client's own
// check of the same condition. Match it with errors.As.
type Error struct {
	// Code is one of the Code constants, or a newer server's code.
	Code string
	// Reason is the server's human-readable message; it may be shown to
	// people but is not meant to be matched.
	Reason string
	// Ref and Room are those of the refused frame, when known.
	Ref  string
	Room string
	// Moderator names the moderator that refused a message (CodeRejected).
	Moderator string
	// RetryAfter is how long the server asked the client to wait
	// (CodeRateLimited); zero when it did not say.
	RetryAfter time.Duration
}

// Error returns "chatstream: <code>: <reason>".
func (e *Error) Error() string {
	s := "chatstream: " + e.Code
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Moderator != "" {
		s += " (moderator " + e.Moderator + ")"
	}
	return s
}

// Conditions callers branch on, matched with errors.Is.
var (
	// ErrClosed reports that the client has stopped (Close, its context,
	// or a permanent failure, which the error also wraps).
	ErrClosed = errors.New("client: closed")
	// ErrUnauthorized reports that the server refused the user's
	// credentials: an HTTP 401 handshake or close code 4001. The client
	// stops; it does not retry.
	ErrUnauthorized = errors.New("client: unauthorized")
	// ErrNotConnected reports a request (History) that needs the
	// connection while the client is reconnecting, or whose connection was
	// lost before the reply.
	ErrNotConnected = errors.New("client: not connected")
	// ErrLeft reports a send or join that Leave gave up.
	ErrLeft = errors.New("client: left the room")
)

// HandshakeError is a server that refused the WebSocket handshake with an
// HTTP status. A 4xx status other than 408 and 429 is permanent: Dial
// returns it, and after a reconnect attempt it stops the client. Others
// are retried after the backoff, and at least after RetryAfter.
type HandshakeError struct {
	// StatusCode is the HTTP status, e.g. 400 for a user name the server
	// refuses or 429 for too many connections.
	StatusCode int
	// Reason is the start of the response body, e.g. "bad user: ...".
	Reason string
	// RetryAfter is the response's Retry-After, zero if none.
	RetryAfter time.Duration
}

// Error describes the refusal.
func (e *HandshakeError) Error() string {
	s := fmt.Sprintf("client: handshake refused: HTTP %d", e.StatusCode)
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Is reports ErrUnauthorized for a 401.
func (e *HandshakeError) Is(target error) bool {
	return target == ErrUnauthorized && e.StatusCode == http.StatusUnauthorized
}

// permanent reports whether retrying the handshake cannot help.
func (e *HandshakeError) permanent() bool {
	s := e.StatusCode
	return s >= 400 && s < 500 && s != http.StatusRequestTimeout && s != http.StatusTooManyRequests
}
