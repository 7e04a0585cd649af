// Package wstest is a WebSocket client of protocol v1 for chatstream's
// tests, tools and load generator: it dials a gateway, sends frames and
// returns server frames one JSON object at a time (batched frames split on
// "\n").
package wstest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Frame is a decoded server frame; fields a type does not use are zero.
type Frame struct {
	Type      string    `json:"type"`
	Room      string    `json:"room"`
	ID        string    `json:"id"`
	Seq       string    `json:"seq"`
	User      string    `json:"user"`
	Text      string    `json:"text"`
	TS        string    `json:"ts"`
	Ref       string    `json:"ref"`
	Code      string    `json:"code"`
	Message   string    `json:"message"`
	History   []Frame   `json:"history"`
	Messages  []Frame   `json:"messages"`
	More      bool      `json:"more"`
	Truncated bool      `json:"truncated"`
	Epoch     string    `json:"epoch"`
	Reset     bool      `json:"reset"`
	Moderator string    `json:"moderator"`
	Users     []string  `json:"users"`
	Joined    []string  `json:"joined"`
	Left      []string  `json:"left"`
	Count     int       `json:"count"`
	Retry     int64     `json:"retry_after_ms"`
	Raw       string    `json:"-"`
	Received  time.Time `json:"-"`
}

// Client is one test connection. Its methods are safe for one sending and
// one receiving goroutine.
type Client struct {
	Conn *websocket.Conn
	// CloseErr is the error that ended the read loop (a *websocket.CloseError
	// after a close frame); valid once Frames is closed.
	CloseErr error

	frames chan Frame
	// held keeps frames that Await skipped, for later Next calls; it is
	// owned by the receiving goroutine.
	held []Frame
	mu   sync.Mutex
}

// Dial connects to base (http://host:port) as user.
func Dial(base, user string) (*Client, error) {
	return DialHeader(base, user, nil)
}

// DialHeader connects with extra request headers (e.g. Origin).
func DialHeader(base, user string, h http.Header) (*Client, error) {
	u := strings.Replace(base, "http", "ws", 1) + "/ws?user=" + url.QueryEscape(user)
	conn, resp, err := websocket.DefaultDialer.Dial(u, h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial %s: %w (HTTP %d)", u, err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	c := &Client{Conn: conn, frames: make(chan Frame, 1<<16)}
	go c.readLoop()
	return c, nil
}

func (c *Client) readLoop() {
	defer close(c.frames)
	for {
		_, data, err := c.Conn.ReadMessage()
		if err != nil {
			c.CloseErr = err
			return
		}
		now := time.Now()
		for _, line := range bytes.Split(data, []byte{'\n'}) {
			var f Frame
			if err := json.Unmarshal(line, &f); err != nil {
				f = Frame{Type: "undecodable"}
			}
			f.Raw, f.Received = string(line), now
			c.frames <- f
		}
	}
}

// Frames returns the channel of received frames; it is closed when the
// connection ends.
func (c *Client) Frames() <-chan Frame { return c.frames }

// Send writes v as a JSON text frame.
func (c *Client) Send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.SendRaw(websocket.TextMessage, b)
}

// SendRaw writes one frame of the given type as is.
func (c *Client) SendRaw(kind int, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.WriteMessage(kind, data)
}

// Join joins room asking for n history messages.
func (c *Client) Join(room string, n int) error {
	return c.Send(map[string]any{"type": "join", "room": room, "history": n})
}

// Say sends text to room with ref.
func (c *Client) Say(room, text, ref string) error {
	return c.Send(map[string]any{"type": "send", "room": room, "text": text, "ref": ref})
}

// ErrTimeout reports that no matching frame arrived in time.
var ErrTimeout = errors.New("timed out waiting for a frame")

// Next returns the next frame (first those Await skipped), or ErrTimeout.
func (c *Client) Next(timeout time.Duration) (Frame, error) {
	if len(c.held) > 0 {
		f := c.held[0]
		c.held = c.held[1:]
		return f, nil
	}
	return c.receive(timeout)
}

func (c *Client) receive(timeout time.Duration) (Frame, error) {
	select {
	case f, ok := <-c.frames:
		if !ok {
			return Frame{}, fmt.Errorf("connection closed: %w", c.CloseErr)
		}
		return f, nil
	case <-time.After(timeout):
		return Frame{}, ErrTimeout
	}
}

// Await returns the first frame of type typ; frames of other types are kept
// for Next.
func (c *Client) Await(typ string, timeout time.Duration) (Frame, error) {
	return c.AwaitFunc(func(f Frame) bool { return f.Type == typ }, timeout)
}

// AwaitFunc returns the first frame for which match is true; other frames
// are kept for Next.
func (c *Client) AwaitFunc(match func(Frame) bool, timeout time.Duration) (Frame, error) {
	for i, f := range c.held {
		if match(f) {
			c.held = append(c.held[:i:i], c.held[i+1:]...)
			return f, nil
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		f, err := c.receive(time.Until(deadline))
		if err != nil {
			return f, fmt.Errorf("awaiting frame: %w", err)
		}
		if match(f) {
			return f, nil
		}
		c.held = append(c.held, f)
	}
}

// Close sends a normal close and closes the connection.
func (c *Client) Close() {
	_ = c.Conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second)) // best effort
	_ = c.Conn.Close()                                                                                                                           // closing twice is harmless
}
