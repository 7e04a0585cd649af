package redisstore

import (
	"context"
	"errors"

	"github.com/ThreeDotsLabs/watermill"
)

// quietCancel is a Watermill logger that reports errors caused by a
// cancelled context (a subscription being stopped) at debug level.
type quietCancel struct {
	watermill.LoggerAdapter
}

func (q quietCancel) Error(msg string, err error, fields watermill.LogFields) {
	if errors.Is(err, context.Canceled) {
		q.Debug(msg, fields.Add(watermill.LogFields{"err": err}))
		return
	}
	q.LoggerAdapter.Error(msg, err, fields)
}

func (q quietCancel) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return quietCancel{q.LoggerAdapter.With(fields)}
}
