package cli

import (
	"log/slog"

	"github.com/chatstream/chatstream/auth"
)

// serveAuthFlags are serve's authentication flags (docs/PROTOCOL.md §3.1),
// embedded in serveCmd.
type serveAuthFlags struct {
	Auth             string `name:"auth" default:"none" enum:"none,jwt" env:"CHATSTREAM_AUTH" help:"Authentication: none trusts ?user= (anyone can use any name; for trying chatstream out), jwt requires a signed token naming the user (one of --jwt-secret-file, --jwt-public-key-file, --jwks-url)."`
	JWTSecretFile    string `name:"jwt-secret-file" env:"CHATSTREAM_JWT_SECRET_FILE" placeholder:"FILE" help:"File holding the HS256 secret of --auth jwt (at least 32 bytes)."`
	JWTPublicKeyFile string `name:"jwt-public-key-file" env:"CHATSTREAM_JWT_PUBLIC_KEY_FILE" placeholder:"FILE" help:"PEM public key of --auth jwt: RSA (RS256), ECDSA P-256 (ES256) or Ed25519 (EdDSA)."`
	JWKSURL          string `name:"jwks-url" env:"CHATSTREAM_JWKS_URL" placeholder:"URL" help:"JSON Web Key Set of --auth jwt (RS256, ES256 or EdDSA keys named by kid); cached, fetched again hourly and on an unknown kid (at most every 5s)."`
	JWTIssuer        string `name:"jwt-issuer" env:"CHATSTREAM_JWT_ISSUER" help:"The iss every token must carry (--auth jwt). Empty: not checked."`
	JWTAudience      string `name:"jwt-audience" env:"CHATSTREAM_JWT_AUDIENCE" help:"An aud every token must carry (--auth jwt). Empty: not checked."`
	RoomsPolicy      string `name:"rooms-policy" env:"CHATSTREAM_ROOMS_POLICY" placeholder:"FILE" help:"Rooms policy: ordered rules with CEL conditions over user, room and claims saying who may join and send where (docs/PROTOCOL.md §3.1). Works with either --auth. SIGHUP rereads it; an invalid file is logged and the previous policy stays in force."`
}

// config returns the server's auth.Config of the flags.
func (f serveAuthFlags) config(log *slog.Logger) auth.Config {
	return auth.Config{
		Mode:          f.Auth,
		SecretFile:    f.JWTSecretFile,
		PublicKeyFile: f.JWTPublicKeyFile,
		JWKSURL:       f.JWKSURL,
		Issuer:        f.JWTIssuer,
		Audience:      f.JWTAudience,
		RoomsPolicy:   f.RoomsPolicy,
		Logger:        log,
	}
}
