// Command verify checks the identity JWT that wechat-oauth-proxy puts in the X-WeChat-Jwt
// header, with the Go standard library only (crypto/ed25519, encoding/json, net/http).
// 只用 Go 标准库校验 wechat-oauth-proxy 放在 X-WeChat-Jwt 里的身份 JWT。
//
// In an application, copy JWKS, FetchJWKS, LoadJWKS, Identity and Verify:
//
//	jwks, err := FetchJWKS("http://127.0.0.1:8080/_wxauth/jwks.json") // at start-up; refresh it
//	// now and then, or when Verify reports ErrUnknownKid
//	user, err := Verify(r.Header.Get("X-WeChat-Jwt"), jwks,
//		"wechat-oauth-proxy", // [jwt] issuer
//		"upstream",           // [jwt] audience: your app's name
//		time.Now())
//
// From the command line (token on stdin; prints the identity as JSON, or "rejected: <reason>"
// on stderr and exit code 1; 2 for wrong usage):
//
//	go run . <jwks-url-or-file> <expected-iss> <expected-aud> < token.txt
//
// What is checked: the algorithm is pinned to EdDSA (Ed25519, the proxy's default
// [jwt] algorithm; "none", HS256 and every other alg are refused), the key is chosen by the
// token's kid from the JWKS (current and, during a rotation, previous key), the signature,
// iss and aud exactly, exp (required), nbf and iat when present (60 s leeway), and sub = openid.
package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

// Algorithm is the one algorithm accepted.
const Algorithm = "EdDSA"

// Leeway is the clock leeway for exp, nbf and iat.
const Leeway = 60 * time.Second

// ErrUnknownKid means the JWKS has no key with the token's kid: fetch the JWKS again (a key
// rotation may have happened) before giving up.
var ErrUnknownKid = errors.New("no key with this kid in the JWKS")

// JWK is one public key of the proxy's JWKS (only the members used here).
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// JWKS is the proxy's /_wxauth/jwks.json document.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// Identity is what the upstream learns about the user. UnionID is nil when WeChat gave none.
type Identity struct {
	OpenID   string  `json:"openid"`
	UnionID  *string `json:"unionid"`
	Nickname string  `json:"nickname"`
	Avatar   string  `json:"avatar"`
	AppID    string  `json:"appid"`
}

// FetchJWKS downloads the JWKS (5 s timeout, no redirects).
func FetchJWKS(url string) (JWKS, error) {
	client := http.Client{
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Get(url)
	if err != nil {
		return JWKS{}, fmt.Errorf("cannot load the JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return JWKS{}, fmt.Errorf("cannot load the JWKS: HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return JWKS{}, fmt.Errorf("cannot load the JWKS: %w", err)
	}
	return ParseJWKS(body)
}

// LoadJWKS reads the JWKS from an http(s) URL or a file.
func LoadJWKS(source string) (JWKS, error) {
	lower := strings.ToLower(source)
	if strings.HasPrefix(lower, "http://") || strings.HasPrefix(lower, "https://") {
		return FetchJWKS(source)
	}
	body, err := os.ReadFile(source)
	if err != nil {
		return JWKS{}, fmt.Errorf("cannot load the JWKS: %w", err)
	}
	return ParseJWKS(body)
}

// ParseJWKS decodes a JWKS document.
func ParseJWKS(body []byte) (JWKS, error) {
	var jwks JWKS
	if err := json.Unmarshal(body, &jwks); err != nil || jwks.Keys == nil {
		return JWKS{}, errors.New(`the JWKS is not a {"keys": [...]} document`)
	}
	return jwks, nil
}

// audience is the aud claim: one string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(data []byte) error {
	var one string
	if err := json.Unmarshal(data, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(data, &many); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

type claims struct {
	Iss      *string   `json:"iss"`
	Aud      *audience `json:"aud"`
	Sub      *string   `json:"sub"`
	Exp      *int64    `json:"exp"`
	Nbf      *int64    `json:"nbf"`
	Iat      *int64    `json:"iat"`
	OpenID   *string   `json:"openid"`
	UnionID  *string   `json:"unionid"`
	Nickname string    `json:"nickname"`
	Avatar   string    `json:"avatar"`
	AppID    string    `json:"appid"`
}

type header struct {
	Alg  *string         `json:"alg"`
	Kid  *string         `json:"kid"`
	Crit json.RawMessage `json:"crit"`
}

var b64 = base64.RawURLEncoding.Strict()

// decodeSegment decodes one base64url part of the token into v.
func decodeSegment(segment, what string, v interface{}) error {
	raw, err := b64.DecodeString(segment)
	if err != nil {
		return fmt.Errorf("%s is not base64url", what)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%s is not the expected JSON object: %v", what, err)
	}
	return nil
}

// publicKey returns the Ed25519 key with this kid.
func (jwks JWKS) publicKey(kid string) (ed25519.PublicKey, error) {
	for _, k := range jwks.Keys {
		if k.Kid != kid {
			continue
		}
		if k.Kty != "OKP" || k.Crv != "Ed25519" || (k.Alg != "" && k.Alg != Algorithm) ||
			(k.Use != "" && k.Use != "sig") {
			return nil, errors.New("the key with this kid is not an Ed25519 signing key")
		}
		x, err := b64.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("the key with this kid is not 32 bytes of base64url")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, ErrUnknownKid
}

// Verify checks token against jwks and returns the identity it carries.
func Verify(token string, jwks JWKS, issuer, aud string, now time.Time) (*Identity, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact JWS (three dot-separated parts)")
	}
	var h header
	if err := decodeSegment(parts[0], "header", &h); err != nil {
		return nil, err
	}
	if h.Alg == nil || *h.Alg != Algorithm {
		alg := "(none)"
		if h.Alg != nil {
			alg = *h.Alg
		}
		return nil, fmt.Errorf("alg %q is not allowed (only %s)", alg, Algorithm)
	}
	if h.Crit != nil {
		return nil, errors.New("crit header parameters are not supported")
	}
	if h.Kid == nil {
		return nil, errors.New("the token has no kid")
	}
	key, err := jwks.publicKey(*h.Kid)
	if err != nil {
		return nil, err
	}
	signature, err := b64.DecodeString(parts[2])
	if err != nil || len(signature) != ed25519.SignatureSize ||
		!ed25519.Verify(key, []byte(parts[0]+"."+parts[1]), signature) {
		return nil, errors.New("bad signature")
	}

	// Only now, with a valid signature, are the claims worth reading.
	var c claims
	if err := decodeSegment(parts[1], "payload", &c); err != nil {
		return nil, err
	}
	if c.Iss == nil || *c.Iss != issuer {
		return nil, fmt.Errorf("iss is not %q", issuer)
	}
	if c.Aud == nil || !contains(*c.Aud, aud) {
		return nil, fmt.Errorf("aud does not name %q", aud)
	}
	leeway := int64(Leeway / time.Second)
	unix := now.Unix()
	if c.Exp == nil {
		return nil, errors.New("exp is missing")
	}
	if unix >= *c.Exp+leeway {
		return nil, errors.New("expired (exp is in the past)")
	}
	if c.Nbf != nil && *c.Nbf > unix+leeway {
		return nil, errors.New("nbf is in the future")
	}
	if c.Iat != nil && *c.Iat > unix+leeway {
		return nil, errors.New("iat is in the future")
	}
	if c.Sub == nil || *c.Sub == "" {
		return nil, errors.New("sub (the openid) is missing")
	}
	if c.OpenID != nil && *c.OpenID != *c.Sub {
		return nil, errors.New("openid and sub differ")
	}
	return &Identity{
		OpenID:   *c.Sub,
		UnionID:  c.UnionID,
		Nickname: c.Nickname,
		Avatar:   c.Avatar,
		AppID:    c.AppID,
	}, nil
}

func contains(list []string, want string) bool {
	for _, s := range list {
		if s == want {
			return true
		}
	}
	return false
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: verify <jwks-url-or-file> <expected-iss> <expected-aud> < token")
		os.Exit(2)
	}
	identity, err := run(os.Args[1], os.Args[2], os.Args[3])
	if err != nil {
		fmt.Fprintf(os.Stderr, "rejected: %v\n", err)
		os.Exit(1)
	}
	out := json.NewEncoder(os.Stdout)
	out.SetEscapeHTML(false)
	if err := out.Encode(identity); err != nil {
		os.Exit(1)
	}
}

func run(source, issuer, aud string) (*Identity, error) {
	jwks, err := LoadJWKS(source)
	if err != nil {
		return nil, err
	}
	token, err := io.ReadAll(io.LimitReader(os.Stdin, 64<<10))
	if err != nil {
		return nil, err
	}
	return Verify(strings.TrimSpace(string(token)), jwks, issuer, aud, time.Now())
}
