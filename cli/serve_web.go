package cli

import "github.com/chatstream/chatstream/web"

// serveWebFlags are serve's flags for the chat page's sign-in, embedded into
// serveCmd. The page reads them from /config.json (web.Config).
type serveWebFlags struct {
	TokenURL  string `env:"CHATSTREAM_TOKEN_URL" placeholder:"PATH" help:"With --auth jwt: the endpoint the chat page fetches its token from (POST with the browser's cookies; answers the token, or 401 when nobody is signed in). A path on the page's own address, such as /auth/token. Empty: the page cannot sign in and says so."`
	SignInURL string `env:"CHATSTREAM_SIGN_IN_URL" placeholder:"URL" help:"With --auth jwt: where the chat page sends a user who is not signed in (a path or an http(s) URL), such as /auth/login. Empty: no sign-in link."`
}

// page returns the page's configuration; the server fills in its auth mode.
func (f serveWebFlags) page() web.Config {
	return web.Config{TokenURL: f.TokenURL, SignInURL: f.SignInURL}
}
