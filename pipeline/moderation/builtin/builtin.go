// Package builtin registers every built-in moderator kind: wordlist,
// ratelimit, flood, links, shape, rules and webhook. Import it for its side
// effect:
//
//	import _ "github.com/chatstream/chatstream/pipeline/moderation/builtin"
package builtin

import (
	// Each package registers its kind in its init function.
	_ "github.com/chatstream/chatstream/pipeline/moderation/flood"
	_ "github.com/chatstream/chatstream/pipeline/moderation/links"
	_ "github.com/chatstream/chatstream/pipeline/moderation/ratelimit"
	_ "github.com/chatstream/chatstream/pipeline/moderation/rules"
	_ "github.com/chatstream/chatstream/pipeline/moderation/shape"
	_ "github.com/chatstream/chatstream/pipeline/moderation/webhook"
	_ "github.com/chatstream/chatstream/pipeline/moderation/wordlist"
)
