package pipeline

import (
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"
)

// ensureCorrelationID gives a message without a correlation id its own
// id (a UUID, unique per message), so every log line of its journey can be
// joined without drawing another random UUID per message.
func ensureCorrelationID(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if middleware.MessageCorrelationID(msg) == "" {
			middleware.SetCorrelationID(msg.UUID, msg)
		}
		return h(msg)
	}
}

// Logging logs every message that passes, with its outcome and duration, at
// debug level, refusals included: a refusal is answered to its sender, and a
// flood of them must not flood the log. Message text is never logged.
func Logging(log *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if !log.Enabled(msg.Context(), slog.LevelDebug) {
				return h(msg) // nothing to log: no attributes built
			}
			start := time.Now()
			out, err := h(msg)
			attrs := []any{
				"msg_id", msg.UUID,
				"room", msg.Metadata.Get(MetaRoom),
				"user", msg.Metadata.Get(MetaUser),
				"conn_id", msg.Metadata.Get(MetaConnID),
				"correlation_id", middleware.MessageCorrelationID(msg),
				"took", time.Since(start),
			}
			if err != nil {
				log.DebugContext(msg.Context(), "message refused", append(attrs, "err", err)...)
			} else {
				log.DebugContext(msg.Context(), "message handled", attrs...)
			}
			return out, err
		}
	}
}

// SizeLimit refuses messages whose text is longer than max bytes with
// CodeTooLarge.
func SizeLimit(max int) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			if len(msg.Payload) > max {
				return nil, Errorf(CodeTooLarge, "text is %d bytes; the limit is %d", len(msg.Payload), max)
			}
			return h(msg)
		}
	}
}

// Validate refuses messages with a bad room, user, ref or text with
// CodeInvalid.
func Validate(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		if err := ValidateRoom(msg.Metadata.Get(MetaRoom)); err != nil {
			return nil, err
		}
		if err := ValidateUser(msg.Metadata.Get(MetaUser)); err != nil {
			return nil, err
		}
		if err := ValidateRef(msg.Metadata.Get(MetaRef)); err != nil {
			return nil, err
		}
		if err := ValidateText(string(msg.Payload)); err != nil {
			return nil, err
		}
		return h(msg)
	}
}
