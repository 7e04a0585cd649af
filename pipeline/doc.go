// Package pipeline is the core of chatstream: it turns every accepted chat
// send into a Watermill message, runs it through a chain of Watermill
// handler middleware (recoverer, correlation id, logging, size limit,
// validation and moderation plugins), stores it in a backend, and delivers
// stored messages to the gateway.
//
// Two halves run separately: an [Ingest] takes submissions through the
// chain into the store and returns each one's [Outcome] to its caller; a
// [Delivery] follows the feed and hands stored messages to a [Deliverer]. A
// [Pipeline] runs both for one instance; a publisher-only process (replay,
// requeue) runs an Ingest alone. The pipeline never imports the gateway.
// Backends implement the
// small interfaces [Store], [Feed], [History] and [DeadLetters]; the memory
// and Redis Streams implementations live in the memstore and redisstore
// packages and share one contract suite in storetest.
package pipeline
