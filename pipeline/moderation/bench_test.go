package moderation_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/chatstream/chatstream/pipeline"
	"github.com/chatstream/chatstream/pipeline/moderation"
)

// benchRules are 20 rules of the kinds a deployment writes: regular
// expressions, room and metadata conditions, helpers.
const benchRules = `rules:
  - {name: crypto, when: 'text.matches("(?i)free\\s+crypto") && room == "lobby"', action: reject, reason: no crypto}
  - {name: giveaway, when: 'text.matches("(?i)give\\s*away")', action: reject, reason: no giveaways}
  - {name: casino, when: 'text.matches("(?i)casino|jackpot|betting")', action: reject, reason: no gambling}
  - {name: phone, action: mask, pattern: '\d{3}-\d{3}-\d{4}'}
  - {name: email, action: mask, pattern: '[\w.+-]+@[\w-]+\.[\w.]+'}
  - {name: card, when: 'text.matches("\\d{4}[ -]?\\d{4}[ -]?\\d{4}[ -]?\\d{4}")', action: reject, reason: no card numbers}
  - {name: invite, when: 'text.contains("discord.gg/")', action: reject, reason: no invites}
  - {name: vip, when: 'room == "vip" && metadata["role"] != "vip"', action: reject, reason: members only}
  - {name: announcements, when: 'room == "announcements" && user != "admin"', action: reject, reason: read only}
  - {name: too-long-word, when: 'text.matches("\\S{60,}")', action: reject, reason: word too long}
  - {name: scam, when: 'containsWord(text, "scam")', action: reject, reason: no scams}
  - {name: shortener, when: 'domains(text).exists(d, d == "bit.ly" || d == "tinyurl.com")', action: reject, reason: no shorteners}
  - {name: buy-now, when: 'normalize(text).contains("buy now")', action: reject, reason: no ads}
  - {name: bot, when: 'user.startsWith("bot-") && room != "bots"', action: reject, reason: bots stay in bots}
  - {name: punctuation, when: 'text.matches("[!?]{6,}")', action: reject, reason: calm down}
  - {name: ip, action: mask, pattern: '\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b'}
  - {name: hashtag-spam, when: 'size(text.split("#")) > 6', action: reject, reason: too many hashtags}
  - {name: mention-spam, when: 'size(text.split("@")) > 6', action: reject, reason: too many mentions}
  - {name: quiet-room, when: 'room == "library" && size(text) > 200', action: reject, reason: keep it short}
  - {name: shout-rewrite, when: 'size(text) > 30 && text.upperAscii() == text', action: rewrite, text: 'text.lowerAscii()'}
`

// benchTexts are typical chat messages, a few of which trip a moderator.
var benchTexts = []string{
	"hello everyone, how is it going today?",
	"did you see the game last night? what a finish",
	"I think the new release fixed the login bug",
	"lol that is hilarious",
	"can someone review my pull request when they have a minute",
	"meeting moved to 3pm, same room",
	"check the docs at https://example.com/docs/getting-started",
	"Ünïcödé text with àccents and emoji 😀 works fine",
	"my number is 555-123-4567 call me",
	"FREE crypto for everyone in the lobby",
	"that is such a scam honestly",
	"ok",
	"what the heck is going on with the build",
	"brb getting coffee",
	"anyone up for lunch at noon?",
	"the deploy finished without errors",
}

func benchChain(b *testing.B) *moderation.Chain {
	b.Helper()
	dir := b.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	words := make([]string, 1000)
	for i := range words {
		var w strings.Builder
		for range 4 + rng.IntN(6) {
			w.WriteByte(byte('a' + rng.IntN(26)))
		}
		words[i] = w.String()
	}
	words[0] = "heck" // one of the texts has it
	write := func(name, data string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	write("words.txt", strings.Join(words, "\n"))
	write("rules.yaml", benchRules)
	write("moderation.yaml", `moderators:
  - kind: shape
    max_chars: 1000
    max_lines: 20
    max_caps: 0.8
  - kind: ratelimit
    per_user: {rate: 1000000, per: 1s}
    per_conn: {rate: 1000000, per: 1s}
  - kind: flood
    max_repeats: 50
  - kind: links
    deny: [bit.ly, evil.com]
    max_links: 5
  - kind: wordlist
    action: mask
    file: words.txt
    poll: -1s
  - kind: rules
    file: rules.yaml
    poll: -1s
`)
	c, err := moderation.LoadFile(filepath.Join(dir, "moderation.yaml"), moderation.Env{Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// benchUsers returns the senders: 509 of them, a prime, so that each
// sends every text in turn and the flood moderator lets them through.
func benchUsers() []string {
	users := make([]string, 509)
	for i := range users {
		users[i] = fmt.Sprint("user-", i)
	}
	return users
}

// BenchmarkChain measures the full built-in chain (shape, ratelimit, flood,
// links, a 1,000-entry wordlist, 20 rules) per message, as the dry run
// calls it.
func BenchmarkChain(b *testing.B) {
	c := benchChain(b)
	ctx := context.Background()
	t0 := time.Now()
	meta := map[string]string{"room": "lobby", "user": "u", "conn_id": "c"}
	users := benchUsers()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m := moderation.Message{
			ID: "id", Room: "lobby", User: users[i%len(users)], ConnID: "c", Text: benchTexts[i%len(benchTexts)],
			Time: t0.Add(time.Duration(i) * time.Millisecond), Metadata: meta,
		}
		_ = c.Evaluate(ctx, m)
		i++
	}
}

// BenchmarkChainMiddleware measures the same chain as the pipeline runs it:
// Watermill middleware around a handler that does nothing.
func BenchmarkChainMiddleware(b *testing.B) {
	c := benchChain(b)
	var h message.HandlerFunc = func(*message.Message) ([]*message.Message, error) { return nil, nil }
	mods := c.Moderators()
	for i := len(mods) - 1; i >= 0; i-- {
		h = mods[i].Middleware(h)
	}
	users := benchUsers()
	msg := message.NewMessage("id", nil)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		msg.Payload = []byte(benchTexts[i%len(benchTexts)])
		msg.Metadata = message.Metadata{pipeline.MetaRoom: "lobby", pipeline.MetaUser: users[i%len(users)], pipeline.MetaConnID: "c"}
		_, _ = h(msg)
		i++
	}
}
