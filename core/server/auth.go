package server

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/mypt/mypt/core/atomicfile"
)

// authCookie holds a login session token.
const authCookie = "mypt_auth"

// sessionTTL is how long a login lasts.
const sessionTTL = 24 * time.Hour

// authFile is the on-disk form of the credentials: only a bcrypt hash.
type authFile struct {
	Bcrypt  string    `json:"bcrypt"`
	Created time.Time `json:"created"`
}

// Auth checks the server password (or token) and tracks login sessions.
// There are no default credentials: the secret is chosen on first start.
type Auth struct {
	hash []byte

	checkMu  sync.Mutex // serialises password checks, which slows guessing
	mu       sync.Mutex
	sessions map[[32]byte]time.Time // sha256(token) -> expiry
	now      func() time.Time
}

// SetupAuth loads the credentials file at path. When password is not empty
// it becomes the secret (replacing a stored one). When the file does not
// exist and no password is given, a random token is generated and written
// to announce once; only its hash is stored.
func SetupAuth(path, password string, announce io.Writer) (*Auth, error) {
	if path == "" {
		return nil, errors.New("auth file path is empty")
	}
	if password == "" {
		b, err := os.ReadFile(path)
		switch {
		case err == nil:
			var f authFile
			if err := json.Unmarshal(b, &f); err != nil || f.Bcrypt == "" {
				return nil, fmt.Errorf("auth file %s is malformed (delete it to set a new password): %v", path, err)
			}
			if _, err := bcrypt.Cost([]byte(f.Bcrypt)); err != nil {
				return nil, fmt.Errorf("auth file %s: %w", path, err)
			}
			return newAuth([]byte(f.Bcrypt)), nil
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("read auth file: %w", err)
		}
		var raw [18]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return nil, err
		}
		password = base64.RawURLEncoding.EncodeToString(raw[:])
		defer fmt.Fprintf(announce, "mypt serve: login token (shown once; only its hash is kept in %s):\n\n    %s\n\n", path, password)
	}
	if len(password) < 8 {
		return nil, errors.New("the password must have at least 8 characters")
	}
	if len(password) > 72 {
		return nil, errors.New("the password must have at most 72 bytes (bcrypt's limit)")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return nil, fmt.Errorf("hash password: %w", err)
	}
	if err := writeAuthFile(path, authFile{Bcrypt: string(hash), Created: time.Now().UTC()}); err != nil {
		return nil, err
	}
	return newAuth(hash), nil
}

func newAuth(hash []byte) *Auth {
	return &Auth{hash: hash, sessions: map[[32]byte]time.Time{}, now: time.Now}
}

func writeAuthFile(path string, f authFile) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create auth file directory: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write auth file: %w", err)
	}
	return nil
}

// login checks password and returns a new session token.
func (a *Auth) login(password string) (string, bool) {
	a.checkMu.Lock()
	ok := bcrypt.CompareHashAndPassword(a.hash, []byte(password)) == nil
	a.checkMu.Unlock()
	if !ok {
		return "", false
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", false
	}
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	for k, exp := range a.sessions {
		if now.After(exp) {
			delete(a.sessions, k)
		}
	}
	a.sessions[sha256.Sum256([]byte(token))] = now.Add(sessionTTL)
	return token, true
}

// valid reports whether the request carries a live session token.
func (a *Auth) valid(r *http.Request) bool {
	c, err := r.Cookie(authCookie)
	if err != nil || c.Value == "" {
		return false
	}
	key := sha256.Sum256([]byte(c.Value))
	a.mu.Lock()
	defer a.mu.Unlock()
	exp, ok := a.sessions[key]
	if ok && a.now().After(exp) {
		delete(a.sessions, key)
		return false
	}
	return ok
}

// logout ends the request's session.
func (a *Auth) logout(r *http.Request) {
	if c, err := r.Cookie(authCookie); err == nil {
		a.mu.Lock()
		delete(a.sessions, sha256.Sum256([]byte(c.Value)))
		a.mu.Unlock()
	}
}
