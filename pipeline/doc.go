// Package pipeline is the core of chatstream: it turns every accepted chat
// send into a Watermill message, runs it through a Watermill Router with
// middleware (recoverer, correlation id, logging, size limit, validation and
// moderation plugins), stores it in a backend, and delivers stored messages
// to the gateway.
//
// The pipeline never imports the gateway: it reports outcomes through
// [Replier] and hands stored messages to a [Deliverer]. Backends implement the
// small interfaces [Store], [Feed], [History] and [DeadLetters]; the memory
// and Redis Streams implementations live in the memstore and redisstore
// packages and share one contract suite in storetest.
package pipeline
