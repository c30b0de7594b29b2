package server

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mypt/mypt/core/chatfmt"
	"github.com/mypt/mypt/core/config"
	"github.com/mypt/mypt/core/dataset"
	"github.com/mypt/mypt/core/generate"
	"github.com/mypt/mypt/core/model"
	"github.com/mypt/mypt/core/prepare"
	"github.com/mypt/mypt/core/tokenizer"
	"github.com/mypt/mypt/core/train"
	"github.com/mypt/mypt/sdk"
)

// buildPlugin builds the CPU backend (MYPT_TEST_CPU_PLUGIN names a prebuilt one).
func buildPlugin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MYPT_TEST_CPU_PLUGIN"); p != "" {
		return p
	}
	if testing.Short() {
		t.Skip("trains a model with the CPU backend plugin; skipped with -short")
	}
	out := filepath.Join(t.TempDir(), "mypt-backend-cpu")
	if b, err := exec.Command("go", "build", "-o", out, "github.com/mypt/mypt/cmd/mypt-backend-cpu").CombinedOutput(); err != nil {
		t.Fatalf("build CPU plugin: %v\n%s", err, b)
	}
	return out
}

// trainTiny prepares the demo chat data and trains the demo config for a
// few steps into root/name, as `mypt prepare` and `mypt train` do.
func trainTiny(t *testing.T, plugin, root, name string) {
	t.Helper()
	ctx := context.Background()
	dsDir := filepath.Join(t.TempDir(), "ds")
	opt := prepare.DefaultOptions()
	opt.Input, opt.Output, opt.ValSplit, opt.Log = "../../configs/data/chat_demo.jsonl", dsDir, 0.1, quietLog()
	if _, err := prepare.Run(ctx, opt); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(config.Sources{File: "../../configs/chat_demo.json"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxIters, cfg.EvalInterval, cfg.EvalIters = 30, 10, 2
	ds, err := dataset.Open(dsDir)
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	tok, err := ds.Tokenizer()
	if err != nil {
		t.Fatal(err)
	}
	tokState, err := tokenizer.MarshalState(tok.State())
	if err != nil {
		t.Fatal(err)
	}
	b, err := sdk.Start(ctx, plugin, sdk.StartOptions{Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	run := &train.Run{Config: cfg, Spec: model.NewSpec(cfg), Backend: b, BackendName: "cpu", Data: ds,
		TokenizerState: tokState, OutDir: filepath.Join(root, name), Log: quietLog()}
	if _, err := run.Train(ctx); err != nil {
		t.Fatal(err)
	}
}

// greedyReference answers a one-turn conversation greedily in a plugin of
// its own, outside the server.
func greedyReference(t *testing.T, plugin, dir, user string, maxNew int) string {
	t.Helper()
	ctx := context.Background()
	b, err := sdk.Start(ctx, plugin, sdk.StartOptions{Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	m, err := generate.Load(ctx, dir, b)
	if err != nil {
		t.Fatal(err)
	}
	prompt, err := m.Tokenizer.Encode(chatfmt.ReplyPrompt([]chatfmt.Turn{{Role: chatfmt.RoleUser, Content: user}}, chatfmt.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int32, len(prompt))
	for i, id := range prompt {
		ids[i] = int32(id)
	}
	out, err := generate.GreedyFullForward(ctx, b, ids, maxNew, m.Config.BlockSize, m.Config.VocabSize, generate.StopIDs())
	if err != nil {
		t.Fatal(err)
	}
	var text []uint32
	for _, id := range out {
		if !generate.StopIDs()[id] {
			text = append(text, uint32(id))
		}
	}
	s, err := m.Tokenizer.Decode(text)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type sseEvent struct {
	name string
	data map[string]any
}

func chat(t *testing.T, c *http.Client, url string, body map[string]any) []sseEvent {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := c.Post(url+"/api/chat", "application/json", strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("chat: HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var events []sseEvent
	sc := bufio.NewScanner(resp.Body)
	var name string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			var d map[string]any
			if err := json.Unmarshal([]byte(line[len("data: "):]), &d); err != nil {
				t.Fatalf("bad SSE data %q: %v", line, err)
			}
			events = append(events, sseEvent{name, d})
		}
	}
	return events
}

// TestServeTrainedModel trains a tiny model, chats with it over the API
// and then, where Chromium and node are installed, in a real browser.
func TestServeTrainedModel(t *testing.T) {
	plugin := buildPlugin(t)
	root := t.TempDir()
	trainTiny(t, plugin, root, "demo")
	const maxNew = 20
	want := greedyReference(t, plugin, filepath.Join(root, "demo"), "Hi there", maxNew)
	t.Logf("greedy reference reply: %q", want)

	s, err := New(Options{ModelsRoot: root, Backend: plugin, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ts := newHTTPServer(t, s)

	t.Run("api", func(t *testing.T) {
		c := client(t)
		req := map[string]any{"model": "demo", "message": "Hi there", "temperature": 0, "max_new_tokens": maxNew}
		events := chat(t, c, ts, req)
		var streamed strings.Builder
		tokens := 0
		for _, e := range events[:len(events)-1] {
			if e.name != "token" {
				t.Fatalf("event %q before done: %v", e.name, e.data)
			}
			streamed.WriteString(e.data["text"].(string))
			tokens++
		}
		done := events[len(events)-1]
		if done.name != "done" {
			t.Fatalf("last event %q %v, want done", done.name, done.data)
		}
		if got := done.data["reply"].(string); got != want || streamed.String() != want {
			t.Errorf("reply %q, streamed %q; greedy full-forward reference %q", got, streamed.String(), want)
		}
		var hist struct{ Messages []messageJSON }
		getJSON(t, c, ts+"/api/history", &hist)
		if len(hist.Messages) != 2 || hist.Messages[0] != (messageJSON{"user", "Hi there"}) || hist.Messages[1].Role != "assistant" {
			t.Fatalf("history after one message = %+v", hist.Messages)
		}
		// A second message continues the conversation; the context is 48
		// tokens, so older turns get dropped as needed.
		for i := range 3 {
			ev := chat(t, c, ts, map[string]any{"model": "demo", "message": "What is 2 + 2?", "max_new_tokens": 12, "seed": i})
			if last := ev[len(ev)-1]; last.name != "done" {
				t.Fatalf("message %d: %v", i+2, last)
			}
		}
		getJSON(t, c, ts+"/api/history", &hist)
		if n := len(hist.Messages); n < 2 || n%2 != 0 || hist.Messages[n-2].Content != "What is 2 + 2?" {
			t.Fatalf("history after four messages = %+v", hist.Messages)
		}
		// Another browser session has its own, empty history.
		var other struct{ Messages []messageJSON }
		getJSON(t, client(t), ts+"/api/history", &other)
		if len(other.Messages) != 0 {
			t.Errorf("fresh session sees %d messages", len(other.Messages))
		}
		postJSON(t, c, ts+"/api/clear", map[string]any{})
		getJSON(t, c, ts+"/api/history", &hist)
		if len(hist.Messages) != 0 {
			t.Errorf("history after clear = %+v", hist.Messages)
		}
		// Too many new tokens for the 48-token context: an error event.
		ev := chat(t, c, ts, map[string]any{"model": "demo", "message": "Hi", "max_new_tokens": 48})
		if last := ev[len(ev)-1]; last.name != "error" || !strings.Contains(last.data["error"].(string), "context") {
			t.Errorf("oversized max_new_tokens: %v", last)
		}
		var m runMetrics
		getJSON(t, c, ts+"/api/metrics?run=demo", &m)
		if len(m.Loss) != 30 || len(m.ValLoss) < 3 || len(m.LR) != 30 {
			t.Errorf("metrics of the trained run: %d loss, %d val, %d lr points", len(m.Loss), len(m.ValLoss), len(m.LR))
		}
	})

	t.Run("browser", func(t *testing.T) {
		chromium := os.Getenv("CHROMIUM")
		if chromium == "" {
			chromium = "/usr/bin/chromium"
		}
		if _, err := os.Stat(chromium); err != nil {
			t.Skipf("no Chromium at %s (apt-get install chromium; .ci/run does)", chromium)
		}
		node, err := exec.LookPath("node")
		if err != nil {
			t.Skip("no node on PATH (.ci/run installs it)")
		}
		if _, err := os.Stat("browsertest/node_modules/playwright-core"); err != nil {
			t.Skip("playwright-core not installed: run npm ci in core/server/browsertest (.ci/run does)")
		}
		outDir := os.Getenv("MYPT_ARTIFACTS")
		if outDir == "" {
			outDir = filepath.Join(os.TempDir(), "mypt-artifacts")
		}
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			t.Fatal(err)
		}
		shot, _ := filepath.Abs(filepath.Join(outDir, "serve-chat.png"))
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, node, "chat.mjs", ts+"/", "demo", shot, t.TempDir())
		cmd.Dir = "browsertest"
		cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
		out, err := cmd.Output()
		if err != nil {
			var stderr string
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("browser run: %v\n%s\n%s", err, out, stderr)
		}
		var res struct {
			Reply, Status, UserShown, Training string
			Streamed, ConsoleErrors            []string
		}
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("browser output %q: %v", out, err)
		}
		t.Logf("screenshot: %s (and serve-chat-training.png); status %q; training %q", shot, res.Status, res.Training)
		if res.UserShown != "Hi there" {
			t.Errorf("user message shown as %q", res.UserShown)
		}
		// The page samples at temperature 1 with seed 1 and max_new_tokens 24
		// (its other fields at their defaults); the API with the same
		// settings in a fresh session must give the same reply.
		ev := chat(t, client(t), ts, map[string]any{"model": "demo", "message": "Hi there", "temperature": 1,
			"top_k": 50, "top_p": 0.9, "repetition_penalty": 1.1, "max_new_tokens": 24, "seed": 1, "system": ""})
		done := ev[len(ev)-1]
		if done.name != "done" || done.data["reply"] != res.Reply {
			t.Errorf("browser reply %q, API reply with the same settings %v", res.Reply, done.data)
		}
		if n, _ := done.data["tokens"].(float64); res.Reply == "" || (n >= 3 && len(res.Streamed) < 2) {
			t.Errorf("reply %q (%v tokens) arrived in %d visible steps, want a streamed reply", res.Reply, n, len(res.Streamed))
		}
		if len(res.ConsoleErrors) > 0 {
			t.Errorf("console errors: %q", res.ConsoleErrors)
		}
		if st, err := os.Stat(shot); err != nil || st.Size() < 5000 {
			t.Errorf("screenshot %s: %v", shot, err)
		}
	})
}

func newHTTPServer(t *testing.T, s *Server) string {
	t.Helper()
	hs := &http.Server{Handler: s}
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String()
}

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }
