package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/mypt/mypt/core/checkpoint"
)

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// fakeCheckpoint makes dir look like a checkpoint to the listing (a
// manifest file); loading it would fail, which these tests never do.
func fakeCheckpoint(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, checkpoint.ManifestFile), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// modelsTree builds a models root with an outside directory beside it.
func modelsTree(t *testing.T) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root, outside = filepath.Join(base, "root"), filepath.Join(base, "outside")
	fakeCheckpoint(t, filepath.Join(root, "run1", "best"))
	fakeCheckpoint(t, filepath.Join(root, "group", "ckpt"))
	fakeCheckpoint(t, filepath.Join(root, ".hidden", "c"))
	fakeCheckpoint(t, outside)
	if err := os.MkdirAll(filepath.Join(root, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "run1", "metrics.jsonl"), []byte(
		`{"event":"step","step":1,"loss":10.5,"lr":0.001,"grad_norm":1}`+"\n"+
			`not json`+"\n"+
			`{"event":"eval","step":1,"val_loss":9.25}`+"\n"+
			`{"event":"step","step":2,"loss":8.75,"lr":0.002}`+"\n"+
			`{"event":"other","step":3}`+"\n"+
			`{"event":"step","step":3,"loss":7.5`), 0o644); err != nil { // a line being written
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "metrics.jsonl"), []byte(`{"event":"step","step":1,"loss":1,"lr":1}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	return root, outside
}

func newTestServer(t *testing.T, root string, auth *Auth) *httptest.Server {
	t.Helper()
	s, err := New(Options{ModelsRoot: root, Backend: "/nonexistent/plugin", Auth: auth, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(func() { ts.Close(); s.Close() })
	return ts
}

func client(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar}
}

func getJSON(t *testing.T, c *http.Client, url string, v any) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		_ = json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}

func postJSON(t *testing.T, c *http.Client, url string, body any) (*http.Response, []byte) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := c.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, out
}

func TestListing(t *testing.T) {
	root, _ := modelsTree(t)
	ts := newTestServer(t, root, nil)
	c := client(t)
	var models struct{ Models []string }
	if code := getJSON(t, c, ts.URL+"/api/models", &models); code != 200 {
		t.Fatalf("models: HTTP %d", code)
	}
	// run1 is a run directory (best/), group/ckpt a checkpoint; hidden
	// directories, empty ones and symbolic links are not listed.
	if want := []string{"group/ckpt", "run1"}; !slices.Equal(models.Models, want) {
		t.Errorf("models = %q, want %q", models.Models, want)
	}
	var runs struct{ Runs []string }
	getJSON(t, c, ts.URL+"/api/runs", &runs)
	if want := []string{"run1"}; !slices.Equal(runs.Runs, want) {
		t.Errorf("runs = %q, want %q", runs.Runs, want)
	}
	var m runMetrics
	if code := getJSON(t, c, ts.URL+"/api/metrics?run=run1", &m); code != 200 {
		t.Fatalf("metrics: HTTP %d", code)
	}
	if want := [][2]float64{{1, 10.5}, {2, 8.75}}; !slices.Equal(m.Loss, want) {
		t.Errorf("loss = %v, want %v", m.Loss, want)
	}
	if want := [][2]float64{{1, 0.001}, {2, 0.002}}; !slices.Equal(m.LR, want) {
		t.Errorf("lr = %v, want %v", m.LR, want)
	}
	if want := [][2]float64{{1, 9.25}}; !slices.Equal(m.ValLoss, want) {
		t.Errorf("val_loss = %v, want %v", m.ValLoss, want)
	}
	// The page and its script are served from the embedded files.
	for _, p := range []string{"/", "/app.js", "/style.css"} {
		resp, err := c.Get(ts.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(b) < 100 {
			t.Errorf("GET %s: HTTP %d, %d bytes", p, resp.StatusCode, len(b))
		}
	}
}

func TestThin(t *testing.T) {
	var pts [][2]float64
	for i := range 1001 {
		pts = append(pts, [2]float64{float64(i), float64(i)})
	}
	got := thin(pts, 100)
	if len(got) > 102 || got[0] != pts[0] || got[len(got)-1] != pts[1000] {
		t.Errorf("thin: %d points, first %v last %v", len(got), got[0], got[len(got)-1])
	}
}

func TestPathEscapes(t *testing.T) {
	root, outside := modelsTree(t)
	bad := []string{
		"", ".", "..", "../outside", "/" + outside, outside, "run1/../../outside", "run1/../run1",
		"./run1", "run1/", "run1//best", "link", "link/", `..\outside`, "run1\x00", ".hidden/c", "empty",
		"run1/best/../../../outside", "%2e%2e/outside", strings.Repeat("a/", 300) + "b",
	}
	for _, name := range bad {
		if dir, err := resolveName(root, name, isModelDir); !errors.Is(err, errBadName) {
			t.Errorf("resolveName(%q) = %q, %v; want errBadName", name, dir, err)
		}
	}
	for _, name := range []string{"run1", "run1/best", "group/ckpt"} {
		if _, err := resolveName(root, name, isModelDir); err != nil {
			t.Errorf("resolveName(%q): %v", name, err)
		}
	}
	// Through HTTP: nothing outside the root is loaded or read.
	ts := newTestServer(t, root, nil)
	c := client(t)
	for _, name := range []string{"../outside", "link", outside, "run1/../../outside"} {
		resp, body := postJSON(t, c, ts.URL+"/api/chat", map[string]any{"model": name, "message": "hi"})
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("chat with model %q: HTTP %d %s, want 404", name, resp.StatusCode, body)
		}
		var e map[string]string
		if code := getJSON(t, c, ts.URL+"/api/metrics?run="+name, &e); code != http.StatusNotFound {
			t.Errorf("metrics of run %q: HTTP %d, want 404", name, code)
		}
	}
	// A listed model whose checkpoint is broken gives a clear error, not a hang.
	resp, body := postJSON(t, c, ts.URL+"/api/chat", map[string]any{"model": "run1", "message": "hi"})
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "cannot load model run1") {
		t.Errorf("broken model: HTTP %d %s", resp.StatusCode, body)
	}
}

func TestBadRequests(t *testing.T) {
	root, _ := modelsTree(t)
	ts := newTestServer(t, root, nil)
	c := client(t)
	resp, err := c.Post(ts.URL+"/api/chat", "text/plain", strings.NewReader(`{"model":"run1","message":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain POST: HTTP %d, want 415", resp.StatusCode)
	}
	for _, body := range []map[string]any{
		{"model": "run1"},
		{"model": "run1", "message": "hi", "temperature": -1},
		{"model": "run1", "message": "hi", "top_p": 0},
		{"model": "run1", "message": "hi", "repetition_penalty": 0.5},
		{"model": "run1", "message": "hi", "max_new_tokens": -3},
		{"model": "run1", "message": "hi", "unknown": 1},
	} {
		if resp, b := postJSON(t, c, ts.URL+"/api/chat", body); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%v: HTTP %d %s, want 400", body, resp.StatusCode, b)
		}
	}
	if _, err := New(Options{ModelsRoot: filepath.Join(root, "missing"), Backend: "x"}); err == nil {
		t.Error("missing models root accepted")
	}
}

func TestAuth(t *testing.T) {
	root, _ := modelsTree(t)
	authPath := filepath.Join(t.TempDir(), "conf", "auth.json")
	var announce bytes.Buffer
	auth, err := SetupAuth(authPath, "", &announce)
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(announce.String())
	token := fields[len(fields)-1]
	if len(token) < 20 {
		t.Fatalf("announced token %q too short (%q)", token, announce.String())
	}
	raw, err := os.ReadFile(authPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), token) {
		t.Fatal("auth file holds the token in clear")
	}
	var f authFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	if bcrypt.CompareHashAndPassword([]byte(f.Bcrypt), []byte(token)) != nil {
		t.Fatal("stored hash does not match the announced token")
	}
	if st, _ := os.Stat(authPath); st.Mode().Perm() != 0o600 {
		t.Errorf("auth file mode %v, want 0600", st.Mode().Perm())
	}
	// A second start reuses the stored hash and announces nothing.
	announce.Reset()
	if _, err := SetupAuth(authPath, "", &announce); err != nil || announce.Len() != 0 {
		t.Fatalf("second start: err %v, announced %q", err, announce.String())
	}

	ts := newTestServer(t, root, auth)
	c := client(t)
	var st map[string]bool
	getJSON(t, c, ts.URL+"/api/auth", &st)
	if !st["required"] || st["ok"] {
		t.Errorf("auth status before login = %v", st)
	}
	for _, p := range []string{"/api/models", "/api/runs", "/api/history", "/api/metrics?run=run1"} {
		if code := getJSON(t, c, ts.URL+p, nil); code != http.StatusUnauthorized {
			t.Errorf("GET %s without login: HTTP %d, want 401", p, code)
		}
	}
	if resp, _ := postJSON(t, c, ts.URL+"/api/chat", map[string]any{"model": "run1", "message": "hi"}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("chat without login: HTTP %d", resp.StatusCode)
	}
	if code := getJSON(t, c, ts.URL+"/", nil); code != 200 {
		t.Errorf("the page itself (with its login form): HTTP %d", code)
	}
	for _, pw := range []string{"", "admin", token + "x", strings.ToUpper(token)} {
		if resp, _ := postJSON(t, c, ts.URL+"/api/login", map[string]string{"password": pw}); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("login with %q: HTTP %d, want 401", pw, resp.StatusCode)
		}
	}
	// A forged cookie is not a session.
	forged := client(t)
	req, _ := http.NewRequest("GET", ts.URL+"/api/models", nil)
	req.AddCookie(&http.Cookie{Name: authCookie, Value: token})
	if resp, err := forged.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("token as cookie: %v %v", resp.StatusCode, err)
	}
	resp, _ := postJSON(t, c, ts.URL+"/api/login", map[string]string{"password": token})
	if resp.StatusCode != 200 {
		t.Fatalf("login: HTTP %d", resp.StatusCode)
	}
	if ck := resp.Cookies(); len(ck) != 1 || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode {
		t.Errorf("login cookie = %+v, want one HttpOnly SameSite=Strict cookie", ck)
	}
	if code := getJSON(t, c, ts.URL+"/api/models", nil); code != 200 {
		t.Errorf("models after login: HTTP %d", code)
	}
	postJSON(t, c, ts.URL+"/api/logout", map[string]string{})
	if code := getJSON(t, c, ts.URL+"/api/models", nil); code != http.StatusUnauthorized {
		t.Errorf("models after logout: HTTP %d, want 401", code)
	}

	// A password given at start replaces the stored one; bad ones are refused.
	if _, err := SetupAuth(authPath, "short", io.Discard); err == nil {
		t.Error("7-character password accepted")
	}
	if _, err := SetupAuth(authPath, "correct horse battery", io.Discard); err != nil {
		t.Fatal(err)
	}
	a2, err := SetupAuth(authPath, "", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a2.login("correct horse battery"); !ok {
		t.Error("new password refused")
	}
	if _, ok := a2.login(token); ok {
		t.Error("old token still accepted")
	}
	if err := os.WriteFile(authPath, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := SetupAuth(authPath, "", io.Discard); err == nil {
		t.Error("malformed auth file accepted")
	}
}
