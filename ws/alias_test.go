package ws_test

import "github.com/ThreeDotsLabs/watermill/message"

type (
	pipelineHandler  = message.HandlerFunc
	watermillMessage = message.Message
)
