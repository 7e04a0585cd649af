package ws

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/chatstream/chatstream/auth"
	"github.com/chatstream/chatstream/pipeline"
)

// Close codes of authentication (protocol v1.1, docs/PROTOCOL.md §10).
const (
	// CloseUnauthorized: the token was missing, invalid or refused, or
	// none came within Config.AuthTimeout.
	CloseUnauthorized = 4001
	// CloseTokenExpired: the token expired and no fresh one came before.
	CloseTokenExpired = 4002
)

// DefaultAuthTimeout is how long a connection of --auth jwt may take to
// authenticate.
const DefaultAuthTimeout = 10 * time.Second

// A connection's authentication is a small state machine run by its reader
// goroutine, with no timer of its own: the read deadline is cut short to
// the moment to authenticate by (until authenticated) and to the token's
// expiry plus the allowed clock skew (after), and a read that times out at
// one of them closes the connection with 4001 or 4002.
//
//	not authenticated ──auth frame or header token, valid──▶ authenticated
//	      │ bad token: error unauthorized, close 4001             │ auth frame, same sub: new rooms, new exp
//	      │ AuthTimeout: error unauthorized, close 4001            │ exp + leeway: close 4002
//
// With --auth none a connection is authenticated from the start as its
// ?user=.

// bearerToken returns the token of an "Authorization: Bearer" header and
// whether the request has an Authorization header at all.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", true
	}
	return strings.TrimSpace(tok), true
}

// identify decides, before the upgrade, who a request is: with --auth
// none its ?user= (a bad name is an HTTP 400, returned as err); with --auth
// jwt the header token's identity (authed), or its refusal (tokenErr), or
// neither when the client will send an auth frame.
func (g *Gateway) identify(r *http.Request) (id auth.Identity, authed bool, tokenErr, err error) {
	if g.cfg.Auth.Mode() == auth.ModeNone {
		id, err = g.cfg.Auth.Anonymous(r.URL.Query().Get("user"))
		if err == nil {
			err = pipeline.ValidateUser(id.User)
		}
		return id, err == nil, nil, err
	}
	// The user is the token's sub; ?user= is ignored.
	tok, present := bearerToken(r)
	if !present {
		return auth.Identity{}, false, nil, nil
	}
	id, tokenErr = g.cfg.Auth.VerifyContext(r.Context(), tok)
	return id, tokenErr == nil, tokenErr, nil
}

// becomeAuthed makes the connection id's: its user, logger and expiry. The
// reader calls it before the connection joins any room; the hub's and
// presence's reads of user happen only for members, after.
func (c *Conn) becomeAuthed(id auth.Identity) {
	c.ident = id
	c.authed = true
	c.user = id.User
	c.log = c.gw.log.With("conn_id", c.id, "user", id.User)
}

// sendAuthed queues the authed frame of the connection's identity.
func (c *Conn) sendAuthed(ref string) {
	f := authedFrame{Type: TypeAuthed, User: c.ident.User, Name: c.ident.Name, Ref: ref}
	if !c.ident.Expires.IsZero() {
		f.Exp = c.ident.Expires.UTC().Format(time.RFC3339)
	}
	c.enqueue(encode(f))
}

// refuseAuth answers a refused first token: error unauthorized, then close
// 4001 after the queued frames.
func (c *Conn) refuseAuth(err error, ref string) {
	reason := strings.TrimPrefix(err.Error(), auth.ErrUnauthorized.Error()+": ")
	c.sendError(pipeline.Errorf(CodeUnauthorized, "%s", reason), ref, "")
	c.log.Debug("authentication refused", "reason", reason)
	c.close(CloseUnauthorized, clip(reason, maxCloseReason), true)
}

// maxCloseReason is the most bytes of a close frame's reason (a control
// frame's payload is at most 125 bytes, two of which are the code).
const maxCloseReason = 123

// authenticate handles an auth frame: the first token of a connection, or
// a fresh one before the current one expires.
func (c *Conn) authenticate(f ClientFrame) {
	if c.gw.cfg.Auth.Mode() == auth.ModeNone {
		c.sendError(pipeline.Errorf(pipeline.CodeInvalid, "this server does not use tokens (--auth none)"), f.Ref, "")
		return
	}
	id, err := c.gw.cfg.Auth.VerifyContext(c.gw.ctx, f.Token)
	switch {
	case err != nil && !c.authed:
		c.refuseAuth(err, f.Ref)
		return
	case err != nil:
		// A failed refresh changes nothing: the connection still ends at
		// the current token's expiry.
		reason := strings.TrimPrefix(err.Error(), auth.ErrUnauthorized.Error()+": ")
		c.sendError(pipeline.Errorf(CodeUnauthorized, "%s", reason), f.Ref, "")
		return
	case c.authed && id.User != c.ident.User:
		c.sendError(pipeline.Errorf(CodeUnauthorized, "the token is for another user; a connection keeps its user"), f.Ref, "")
		return
	}
	if !c.authed {
		c.becomeAuthed(id)
	} else {
		c.ident = id
		c.leaveForbidden()
	}
	c.sendAuthed(f.Ref)
}

// leaveForbidden leaves the rooms a refreshed token no longer allows, each
// with a left frame.
func (c *Conn) leaveForbidden() {
	for room := range c.rooms {
		if c.gw.cfg.Auth.Allow(c.ident, room, auth.Join) != nil {
			delete(c.rooms, room)
			c.gw.hub.leave(c, room)
			c.enqueue(encode(leftFrame{Type: TypeLeft, Room: room}))
		}
	}
}

// allow checks that the connection may do act in room; a refusal is
// queued as a forbidden error and reported false.
func (c *Conn) allow(f ClientFrame, act auth.Action) bool {
	if c.allowed(f, act) {
		return true
	}
	c.refuse(f, act)
	return false
}

// allowed reports whether the connection's identity may act on f's room.
func (c *Conn) allowed(f ClientFrame, act auth.Action) bool {
	return c.gw.cfg.Auth.Allow(c.ident, f.Room, act) == nil
}

// refuse answers f with forbidden and the reason act on its room is not
// allowed.
func (c *Conn) refuse(f ClientFrame, act auth.Action) {
	err := c.gw.cfg.Auth.Allow(c.ident, f.Room, act)
	if err == nil {
		err = auth.ErrForbidden
	}
	reason := strings.TrimPrefix(err.Error(), auth.ErrForbidden.Error()+": ")
	c.sendError(pipeline.Errorf(CodeForbidden, "%s", reason), f.Ref, f.Room)
}

// readDeadline is the read deadline from now: PongWait, cut short by the
// moment to authenticate by, or by the token's expiry.
func (c *Conn) readDeadline(now time.Time) time.Time {
	d := now.Add(c.gw.cfg.PongWait)
	switch {
	case !c.authed && c.authBy.Before(d):
		d = c.authBy
	case c.authed && !c.ident.Expires.IsZero() && c.expiresAt().Before(d):
		d = c.expiresAt()
	}
	return d
}

// expiresAt is when the connection's token stops being valid: its exp
// plus the clock skew the verifier allows on exp (Identity.ValidUntil), so
// that a token accepted within that skew, first or fresh, is not closed at
// once.
func (c *Conn) expiresAt() time.Time {
	if c.ident.ValidUntil.IsZero() {
		return c.ident.Expires
	}
	return c.ident.ValidUntil
}

// authTimedOut closes the connection when err is a read that timed out at
// the moment to authenticate by (4001) or at the token's expiry plus the
// allowed clock skew (4002, expiresAt), and reports whether it did. At
// expiry the connection leaves its rooms and the sends read before it are
// answered first: the reader has stopped, so nothing more is taken, and
// what was taken is acked (or refused) before the close.
func (c *Conn) authTimedOut(err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	now := time.Now()
	switch {
	case !c.authed && !now.Before(c.authBy):
		c.refuseAuth(errors.New("no valid auth frame within the time to authenticate"), "")
		return true
	case c.authed && !c.ident.Expires.IsZero() && !now.Before(c.expiresAt()):
		c.log.Debug("token expired")
		c.leaveRooms()
		c.awaitSends()
		c.close(CloseTokenExpired, "token expired", true)
		return true
	}
	return false
}
