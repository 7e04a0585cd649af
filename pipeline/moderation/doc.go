// Package moderation is chatstream's moderation plugin API and the chain
// that runs moderators at the pipeline's plugin point.
//
// A [Moderator] sees a [Message] (room, user, text, metadata) and returns a
// [Decision]: accept, reject (with a reason shown to the sender) or rewrite
// (new text, with a note stored in the message's metadata). A [Chain] runs
// moderators in the order of its configuration; each one becomes a
// [pipeline.Moderator], that is Watermill middleware, and every decision is
// counted per moderator ([Chain.Stats]).
//
// Moderators are built by kind from a configuration file (see [LoadFile]
// and docs/PLUGINS.md). A kind is registered with [Register], usually from
// the init function of the package that implements it, like database/sql
// drivers: a binary gets the built-in kinds with
//
//	import _ "github.com/chatstream/chatstream/pipeline/moderation/builtin"
//
// and adds its own with another blank import, or for one load only with
// the [WithKind] option. The registry is the one piece of package-level
// mutable state in chatstream; it is written only during program
// initialisation in practice and guarded by a mutex.
//
// Moderators are called concurrently from the pipeline's shards and must be
// safe for concurrent use. A moderator that needs a background goroutine
// implements [Runner]; one whose configuration can be reloaded implements
// [Reloader]; [Describer] gives `chatstream moderation check` a summary.
package moderation
