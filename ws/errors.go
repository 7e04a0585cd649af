package ws

import (
	"errors"

	"github.com/chatstream/chatstream/pipeline"
)

// Error codes of the gateway's own refusals, sent in error frames besides
// the pipeline's (pipeline.CodeInvalid, ...). They are part of protocol v1
// (docs/PROTOCOL.md).
const (
	// CodeBadFrame is a frame that is not a JSON object of the protocol.
	CodeBadFrame = "bad_frame"
	// CodeNotJoined is a frame for a room the connection has not joined.
	CodeNotJoined = "not_joined"
	// CodeRoomLimit is a join beyond Config.MaxRooms.
	CodeRoomLimit = "room_limit"
	// CodeUnauthorized (v1.1) is a missing, invalid or refused token, or a
	// frame before the connection authenticated.
	CodeUnauthorized = "unauthorized"
	// CodeForbidden (v1.1) is a join or send the token's rooms or publish,
	// or the rooms policy, do not allow.
	CodeForbidden = "forbidden"
)

// asProtocolError returns err as the *pipeline.Error a client is told; an
// error of another kind becomes CodeInvalid with its text.
func asProtocolError(err error) *pipeline.Error {
	var perr *pipeline.Error
	if errors.As(err, &perr) {
		return perr
	}
	return pipeline.Errorf(pipeline.CodeInvalid, "%v", err)
}
