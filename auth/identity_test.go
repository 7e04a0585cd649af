package auth_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/chatstream/chatstream/auth"
)

// TestVerifyNullRoomClaims: a null rooms or publish claim, as a token
// server writes for a nil list, never widens what the token allows.
func TestVerifyNullRoomClaims(t *testing.T) {
	t.Parallel()
	v := hsVerifier(t, nil)
	key := []byte(testSecret)
	base := func(extra jwt.MapClaims) jwt.MapClaims {
		// Not claims(): it deletes nil values, and null is what is tested.
		c := jwt.MapClaims{"sub": "bob", "exp": time.Now().Add(time.Hour).Unix()}
		for k, val := range extra {
			c[k] = val
		}
		return c
	}
	cases := []struct {
		name          string
		claims        jwt.MapClaims
		wantErr       string // "" for a valid token
		join, pub     []string
		noJoin, noPub []string
	}{
		{
			name:   "publish null is as rooms",
			claims: base(jwt.MapClaims{"rooms": []any{"lobby"}, "publish": nil}),
			join:   []string{"lobby"}, pub: []string{"lobby"},
			noJoin: []string{"admins"}, noPub: []string{"admins"},
		},
		{
			name:   "publish null with rooms absent is every room",
			claims: base(jwt.MapClaims{"publish": nil}),
			join:   []string{"lobby", "admins"}, pub: []string{"lobby", "admins"},
		},
		{
			name:   "publish null with rooms empty is no room",
			claims: base(jwt.MapClaims{"rooms": []any{}, "publish": nil}),
			noJoin: []string{"lobby"}, noPub: []string{"lobby"},
		},
		{
			name:    "rooms null is refused",
			claims:  base(jwt.MapClaims{"rooms": nil}),
			wantErr: "token claim rooms is null; omit it or give a list",
		},
		{
			name:    "rooms null with publish is refused",
			claims:  base(jwt.MapClaims{"rooms": nil, "publish": []any{"lobby"}}),
			wantErr: "token claim rooms is null; omit it or give a list",
		},
		{
			name:   "publish list narrower than rooms",
			claims: base(jwt.MapClaims{"rooms": []any{"lobby", "news"}, "publish": []any{"lobby"}}),
			join:   []string{"lobby", "news"}, pub: []string{"lobby"},
			noPub: []string{"news"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id, err := v.Verify(sign(t, jwt.SigningMethodHS256, key, tc.claims, ""))
			if tc.wantErr != "" {
				if !errors.Is(err, auth.ErrUnauthorized) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Verify(%v) = %+v, %v; want ErrUnauthorized containing %q", tc.claims, id, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify(%v): %v", tc.claims, err)
			}
			for _, room := range tc.join {
				if !id.CanJoin(room) {
					t.Errorf("CanJoin(%s) = false, want true (rooms %q)", room, id.Rooms)
				}
			}
			for _, room := range tc.noJoin {
				if id.CanJoin(room) {
					t.Errorf("CanJoin(%s) = true, want false (rooms %q)", room, id.Rooms)
				}
			}
			for _, room := range tc.pub {
				if !id.CanPublish(room) {
					t.Errorf("CanPublish(%s) = false, want true (publish %q)", room, id.Publish)
				}
			}
			for _, room := range tc.noPub {
				if id.CanPublish(room) {
					t.Errorf("CanPublish(%s) = true, want false (publish %q)", room, id.Publish)
				}
			}
		})
	}
}
