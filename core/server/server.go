// Package server is mypt's web interface: a single embedded page with a
// Chat tab (pick a checkpoint under the models root, set sampling, talk to
// it; history kept per browser session on the server; replies streamed as
// server-sent events) and a Training tab (loss, val loss and learning-rate
// curves read from each run's metrics.jsonl).
//
// Every model runs in its own backend plugin process, started on first use
// and kept; requests to one model are serialised. Model and run names are
// paths relative to the root, checked so that none escapes it.
package server

import (
	"crypto/rand"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mypt/mypt/core/chatfmt"
	"github.com/mypt/mypt/core/generate"
)

//go:embed static
var staticFiles embed.FS

// Options configure a Server.
type Options struct {
	ModelsRoot string // directory holding checkpoints and run directories
	Backend    string // backend plugin executable
	// Auth, when set, requires a login for the API.
	Auth *Auth
	// SecureCookies marks cookies Secure (behind a TLS proxy).
	SecureCookies bool
	Logger        *slog.Logger
}

// Server serves the page and its API.
type Server struct {
	opt      Options
	log      *slog.Logger
	models   *modelCache
	sessions *sessionStore
	mux      *http.ServeMux
}

// New checks the options and builds a Server. Close stops its plugins.
func New(opt Options) (*Server, error) {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	st, err := os.Stat(opt.ModelsRoot)
	if err != nil {
		return nil, fmt.Errorf("models root: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("models root %s is not a directory", opt.ModelsRoot)
	}
	if opt.Backend == "" {
		return nil, errors.New("no backend plugin given")
	}
	s := &Server{
		opt:      opt,
		log:      opt.Logger,
		models:   &modelCache{backend: opt.Backend, log: opt.Logger, models: map[string]*loaded{}},
		sessions: &sessionStore{m: map[string]*session{}, max: 1000},
		mux:      http.NewServeMux(),
	}
	sub, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, err
	}
	s.mux.Handle("GET /", http.FileServerFS(sub))
	s.mux.HandleFunc("GET /api/auth", s.handleAuthStatus)
	s.mux.HandleFunc("POST /api/login", s.handleLogin)
	s.mux.HandleFunc("POST /api/logout", s.handleLogout)
	s.mux.Handle("GET /api/models", s.protect(s.handleModels))
	s.mux.Handle("GET /api/history", s.protect(s.handleHistory))
	s.mux.Handle("POST /api/clear", s.protect(s.handleClear))
	s.mux.Handle("POST /api/chat", s.protect(s.handleChat))
	s.mux.Handle("GET /api/runs", s.protect(s.handleRuns))
	s.mux.Handle("GET /api/metrics", s.protect(s.handleMetrics))
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	s.mux.ServeHTTP(w, r)
}

// Close stops every backend plugin the server started.
func (s *Server) Close() { s.models.close() }

// protect requires a login when the server has one, and a JSON body on
// POSTs (which a cross-site form cannot send without a CORS preflight).
func (s *Server) protect(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.opt.Auth != nil && !s.opt.Auth.valid(r) {
			writeError(w, http.StatusUnauthorized, "login required")
			return
		}
		if r.Method == http.MethodPost && r.Header.Get("Content-Type") != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, "send application/json")
			return
		}
		h(w, r)
	})
}

func (s *Server) handleAuthStatus(w http.ResponseWriter, r *http.Request) {
	required := s.opt.Auth != nil
	writeJSON(w, http.StatusOK, map[string]bool{"required": required, "ok": !required || s.opt.Auth.valid(r)})
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if s.opt.Auth == nil {
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
		return
	}
	var body struct {
		Password string `json:"password"`
	}
	if err := decodeBody(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	token, ok := s.opt.Auth.login(body.Password)
	if !ok {
		s.log.Warn("failed login", "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, "wrong password")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: authCookie, Value: token, Path: "/", MaxAge: int(sessionTTL.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.opt.SecureCookies})
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	if s.opt.Auth != nil {
		s.opt.Auth.logout(r)
	}
	http.SetCookie(w, &http.Cookie{Name: authCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (s *Server) handleModels(w http.ResponseWriter, _ *http.Request) {
	names, err := listDirs(s.opt.ModelsRoot, isModelDir)
	if err != nil {
		s.log.Error("list models", "err", err)
		writeError(w, http.StatusInternalServerError, "cannot list the models root")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": nonNil(names)})
}

type messageJSON struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request) {
	sess := s.sessions.get(w, r, s.opt.SecureCookies)
	sess.mu.Lock()
	msgs := []messageJSON{}
	for _, t := range sess.chat.Turns {
		role := "user"
		if t.Role == chatfmt.RoleAssistant {
			role = "assistant"
		}
		msgs = append(msgs, messageJSON{Role: role, Content: t.Content})
	}
	sess.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"messages": msgs})
}

func (s *Server) handleClear(w http.ResponseWriter, r *http.Request) {
	sess := s.sessions.get(w, r, s.opt.SecureCookies)
	sess.mu.Lock()
	sess.chat.Clear()
	sess.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// chatRequest is the body of POST /api/chat. Absent sampling fields take
// the "chat" preset's values.
type chatRequest struct {
	Model             string   `json:"model"`
	Message           string   `json:"message"`
	System            string   `json:"system"`
	Temperature       *float64 `json:"temperature"`
	TopK              *int     `json:"top_k"`
	TopP              *float64 `json:"top_p"`
	RepetitionPenalty *float64 `json:"repetition_penalty"`
	MaxNewTokens      int      `json:"max_new_tokens"` // 0: min(256, block_size/2)
	Seed              *uint64  `json:"seed"`
}

func (c *chatRequest) params() (generate.Params, error) {
	p, err := generate.Preset("chat")
	if err != nil {
		return p, err
	}
	p.PenaltyWindow = 256
	if c.Temperature != nil {
		p.Temperature = *c.Temperature
	}
	if c.TopK != nil {
		p.TopK = *c.TopK
	}
	if c.TopP != nil {
		p.TopP = *c.TopP
	}
	if c.RepetitionPenalty != nil {
		p.RepetitionPenalty = *c.RepetitionPenalty
	}
	switch {
	case p.Temperature < 0 || p.Temperature > 5:
		return p, errors.New("temperature must be in [0, 5]")
	case p.TopK < 0:
		return p, errors.New("top_k must be at least 0")
	case p.TopP <= 0 || p.TopP > 1:
		return p, errors.New("top_p must be in (0, 1]")
	case p.RepetitionPenalty < 1 || p.RepetitionPenalty > 10:
		return p, errors.New("repetition_penalty must be in [1, 10]")
	case c.MaxNewTokens < 0:
		return p, errors.New("max_new_tokens must be at least 0")
	case len(c.System) > 4000:
		return p, errors.New("system prompt too long")
	}
	return p, nil
}

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if err := decodeBody(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	params, err := req.params()
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(req.Message) == 0 || len(req.Message) > 16000 {
		writeError(w, http.StatusBadRequest, "message must have 1 to 16000 bytes")
		return
	}
	dir, err := resolveName(s.opt.ModelsRoot, req.Model, isModelDir)
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	sess := s.sessions.get(w, r, s.opt.SecureCookies)
	// One request per session at a time, then one per model.
	sess.mu.Lock()
	defer sess.mu.Unlock()
	lm, err := s.models.get(r.Context(), dir)
	if err != nil {
		s.log.Error("load model", "model", req.Model, "err", err)
		writeError(w, http.StatusBadGateway, fmt.Sprintf("cannot load model %s: %v", req.Model, err))
		return
	}
	lm.mu.Lock()
	defer lm.mu.Unlock()

	maxNew := req.MaxNewTokens
	if maxNew == 0 {
		maxNew = min(256, lm.model.Config.BlockSize/2)
	}
	seed := mrand.Uint64()
	if req.Seed != nil {
		seed = *req.Seed
	}
	sess.chat.Options = chatfmt.Options{SystemPrompt: req.System}

	flusher, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	send := func(event string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	}
	start := time.Now()
	res, err := sess.chat.Reply(r.Context(), lm.client, lm.model, generate.ChatRequest{
		User:         req.Message,
		MaxNewTokens: maxNew,
		Sampler:      generate.NewSampler(params, seed),
		Emit:         func(text string) error { return send("token", map[string]string{"text": text}) },
	})
	if err != nil {
		if r.Context().Err() == nil {
			s.log.Warn("chat", "model", req.Model, "err", err)
			_ = send("error", map[string]string{"error": err.Error()})
		}
		return
	}
	s.log.Info("chat reply", "model", req.Model, "tokens", res.Tokens, "dropped_turns", res.Dropped, "elapsed", time.Since(start).Round(time.Millisecond))
	_ = send("done", map[string]any{"reply": res.Reply, "dropped": res.Dropped, "stopped": res.Stopped,
		"tokens": res.Tokens, "seed": seed, "max_new_tokens": maxNew})
}

func hasMetrics(dir string) bool {
	st, err := os.Stat(filepath.Join(dir, "metrics.jsonl"))
	return err == nil && st.Mode().IsRegular()
}

func (s *Server) handleRuns(w http.ResponseWriter, _ *http.Request) {
	names, err := listDirs(s.opt.ModelsRoot, hasMetrics)
	if err != nil {
		s.log.Error("list runs", "err", err)
		writeError(w, http.StatusInternalServerError, "cannot list the models root")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"runs": nonNil(names)})
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("run")
	dir, err := resolveName(s.opt.ModelsRoot, name, hasMetrics)
	if err != nil {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	m, err := readMetrics(filepath.Join(dir, "metrics.jsonl"), 4000)
	if err != nil {
		s.log.Error("read metrics", "run", name, "err", err)
		writeError(w, http.StatusInternalServerError, "cannot read the run's metrics")
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// session is one browser's chat.
type session struct {
	mu       sync.Mutex
	chat     generate.Chat
	lastUsed time.Time
}

// sessionStore maps the chat cookie to sessions, dropping the least
// recently used beyond max.
type sessionStore struct {
	mu  sync.Mutex
	m   map[string]*session
	max int
}

const chatCookie = "mypt_chat"

func (st *sessionStore) get(w http.ResponseWriter, r *http.Request, secure bool) *session {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := time.Now()
	if c, err := r.Cookie(chatCookie); err == nil {
		if s, ok := st.m[c.Value]; ok {
			s.lastUsed = now
			return s
		}
	}
	if len(st.m) >= st.max {
		var oldest string
		var t time.Time
		for k, s := range st.m {
			if oldest == "" || s.lastUsed.Before(t) {
				oldest, t = k, s.lastUsed
			}
		}
		delete(st.m, oldest)
	}
	var raw [24]byte
	_, _ = rand.Read(raw[:])
	id := base64.RawURLEncoding.EncodeToString(raw[:])
	s := &session{lastUsed: now}
	st.m[id] = s
	http.SetCookie(w, &http.Cookie{Name: chatCookie, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure})
	return s
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
