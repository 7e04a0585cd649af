package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// frameConn is a client's plain TCP connection whose server frames are read
// without the websocket library once the handshake is done, with one read
// system call per batch of data that arrived, not two.
//
// A goroutine blocked on a socket in Go reads until the socket is empty: the
// read that returns data, then one that fails with EAGAIN before it parks.
// A receiver gets one message every few milliseconds, so half of its reads
// were such empty ones, and reading was about half of the generator's CPU
// in scenario B. messages knows a read that returned less than it asked
// for emptied the socket, and waits for the next data without trying.
//
// The websocket library still dials, upgrades and writes (sends, pongs,
// the close reply). It must not read after the handshake: Read hands it
// the HTTP response and nothing after it, so every frame stays here.
type frameConn struct {
	net.Conn
	raw syscall.RawConn

	// buf[start:end] holds bytes read and not yet handed out.
	buf        []byte
	start, end int
	// header counts the bytes of "\r\n\r\n" matched at the end of what
	// Read has handed out; 4 once the response's header is complete.
	header int
	// msg gathers the payloads of a fragmented message; inMsg is true
	// between its first frame and its last.
	msg   []byte
	inMsg bool
}

// frameDialer returns a dial function for websocket.Dialer.NetDialContext
// whose connections are frameConns.
func frameDialer(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			return c, nil // not a socket this reader knows; the library reads it
		}
		raw, err := tc.SyscallConn()
		if err != nil {
			_ = c.Close() // useless without its descriptor
			return nil, fmt.Errorf("loadgen: dial %s: %w", addr, err)
		}
		return &frameConn{Conn: c, raw: raw, buf: make([]byte, messageBufferSize)}, nil
	}
}

// headerEnd ends an HTTP response's header.
const headerEnd = "\r\n\r\n"

// Read serves the websocket library's handshake. Until the response's
// header is complete it hands out no byte past the header's end; after
// that (a refused handshake's body) it reads on.
func (c *frameConn) Read(p []byte) (int, error) {
	if c.start == c.end {
		if c.header == len(headerEnd) {
			return c.Conn.Read(p)
		}
		c.start, c.end = 0, 0
		n, err := c.Conn.Read(c.buf)
		if n == 0 {
			return 0, err
		}
		c.end = n
	}
	data := c.buf[c.start:min(c.end, c.start+len(p))]
	for i := 0; i < len(data) && c.header < len(headerEnd); i++ {
		switch {
		case data[i] == headerEnd[c.header]:
			c.header++
		case data[i] == headerEnd[0]:
			c.header = 1
		default:
			c.header = 0
		}
		if c.header == len(headerEnd) {
			data = data[:i+1]
		}
	}
	n := copy(p, data)
	c.start += n
	return n, nil
}

// errLimit reports a server message larger than the read limit.
var errLimit = errors.New("loadgen: server message larger than the read limit")

// messages hands each server text message to handle, in order, until
// handle returns false (messages then returns nil) or reading fails. The
// message is valid only until handle returns. Pings are answered through
// ws; a close frame is answered and ends it with a *websocket.CloseError.
// A message larger than limit, or a frame that breaks RFC 6455, ends it
// with an error. Read deadlines set on the connection apply.
func (c *frameConn) messages(ws *websocket.Conn, limit int, handle func(msg []byte) bool) error {
	if c.header != len(headerEnd) {
		return errors.New("loadgen: frames read before the handshake")
	}
	stop, err := c.parse(ws, limit, handle)
	if stop || err != nil {
		return err
	}
	var ferr error
	rerr := c.raw.Read(func(fd uintptr) bool {
		// Every call reads at once: the call that starts a raw read may
		// follow data whose readiness was reset, and later calls follow
		// a wait for readiness.
		for {
			c.makeRoom(limit)
			want := len(c.buf) - c.end
			n, err := syscall.Read(int(fd), c.buf[c.end:])
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN):
				return false
			case err != nil:
				ferr = os.NewSyscallError("read", err)
				return true
			case n == 0:
				ferr = io.ErrUnexpectedEOF
				return true
			}
			c.end += n
			if stop, err := c.parse(ws, limit, handle); stop || err != nil {
				ferr = err
				return true
			}
			if n < want {
				return false // the socket is empty: wait for more
			}
		}
	})
	if rerr != nil {
		return rerr
	}
	return ferr
}

// maxFrameHeader is the longest header of a server frame (unmasked).
const maxFrameHeader = 10

// makeRoom makes space after end for at least the rest of the frame being
// read (bounded by limit) and at least a few bytes, moving what is kept to
// the front of buf or growing it.
func (c *frameConn) makeRoom(limit int) {
	if c.start == c.end {
		c.start, c.end = 0, 0
	}
	need := maxFrameHeader
	if n, h, ok := frameSize(c.buf[c.start:c.end]); ok && n <= int64(limit) {
		need = h + int(n)
	}
	if len(c.buf)-c.start >= need && len(c.buf)-c.end > 0 {
		return
	}
	if len(c.buf) < need {
		grown := make([]byte, need)
		c.end = copy(grown, c.buf[c.start:c.end])
		c.buf, c.start = grown, 0
		return
	}
	c.end = copy(c.buf, c.buf[c.start:c.end])
	c.start = 0
}

// frameSize reads the header at the start of b: the payload's length and
// the header's, or ok false when b does not hold the whole header.
func frameSize(b []byte) (payload int64, header int, ok bool) {
	if len(b) < 2 {
		return 0, 0, false
	}
	switch n := b[1] & 0x7f; n {
	case 126:
		if len(b) < 4 {
			return 0, 0, false
		}
		return int64(binary.BigEndian.Uint16(b[2:])), 4, true
	case 127:
		if len(b) < 10 {
			return 0, 0, false
		}
		v := binary.BigEndian.Uint64(b[2:])
		if v > 1<<62 {
			v = 1 << 62 // larger than any limit
		}
		return int64(v), 10, true
	default:
		return int64(n), 2, true
	}
}

// Opcodes of RFC 6455, section 5.2.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// parse hands out the complete frames in buf[start:end]; stop reports that
// handle returned false or a close frame ended the stream (err says which).
func (c *frameConn) parse(ws *websocket.Conn, limit int, handle func(msg []byte) bool) (stop bool, err error) {
	for {
		b := c.buf[c.start:c.end]
		n, h, ok := frameSize(b)
		if !ok {
			return false, nil
		}
		if b[0]&0x70 != 0 || b[1]&0x80 != 0 {
			return true, fmt.Errorf("loadgen: server frame with reserved bits or a mask (header %#x %#x)", b[0], b[1])
		}
		if n > int64(limit) {
			return true, fmt.Errorf("%w (%d bytes, limit %d)", errLimit, n, limit)
		}
		if int64(len(b)-h) < n {
			return false, nil
		}
		fin, op, payload := b[0]&0x80 != 0, b[0]&0x0f, b[h:h+int(n)]
		c.start += h + int(n)
		if op >= opClose && (!fin || n > 125) {
			return true, fmt.Errorf("loadgen: server control frame %#x fragmented or over 125 bytes", op)
		}
		switch op {
		case opText, opBinary:
			if c.inMsg {
				return true, fmt.Errorf("loadgen: server message began inside a fragmented one")
			}
			if !fin {
				c.msg, c.inMsg = append(c.msg[:0], payload...), true
				continue
			}
			if !handle(payload) {
				return true, nil
			}
		case opContinuation:
			if !c.inMsg {
				return true, fmt.Errorf("loadgen: server continuation frame outside a message")
			}
			if len(c.msg)+len(payload) > limit {
				return true, fmt.Errorf("%w (more than %d bytes in fragments)", errLimit, limit)
			}
			c.msg = append(c.msg, payload...)
			if fin {
				c.inMsg = false
				if !handle(c.msg) {
					return true, nil
				}
			}
		case opPing:
			_ = ws.WriteControl(websocket.PongMessage, payload, time.Now().Add(CloseWait)) // as the library does: a failed pong shows on the next write
		case opPong:
		case opClose:
			ce := &websocket.CloseError{Code: websocket.CloseNoStatusReceived}
			if len(payload) >= 2 {
				ce.Code, ce.Text = int(binary.BigEndian.Uint16(payload)), string(payload[2:])
			}
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(ce.Code, ""), time.Now().Add(CloseWait)) // the reply is a courtesy
			return true, ce
		default:
			return true, fmt.Errorf("loadgen: server frame with unknown opcode %#x", op)
		}
	}
}
