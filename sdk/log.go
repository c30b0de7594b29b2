package sdk

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// hclogTimeFormat is the timestamp layout go-plugin expects in JSON log lines.
const hclogTimeFormat = "2006-01-02T15:04:05.000000Z07:00"

// NewPluginLogger returns a slog logger that writes hclog-style JSON lines to
// w (a plugin's stderr). The host parses them and logs each at its level
// under the plugin's name; anything else a plugin prints on stderr reaches
// the host's log at debug level.
func NewPluginLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				return slog.String("@timestamp", a.Value.Time().Format(hclogTimeFormat))
			case slog.LevelKey:
				return slog.String("@level", hclogLevelName(a.Value.Any().(slog.Level)))
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	}))
}

func hclogLevelName(l slog.Level) string {
	switch {
	case l < slog.LevelDebug:
		return "trace"
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	}
	return "error"
}

// hostLogger returns an hclog logger for go-plugin's client side whose every
// line is forwarded to sl at the matching slog level.
func hostLogger(sl *slog.Logger, name string) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:   name,
		Level:  hclog.Trace,
		Output: io.Discard,
	})
	l.RegisterSink(&slogSink{sl: sl, own: name})
	return l
}

// slogSink forwards hclog lines to a slog logger. go-plugin's own lifecycle
// messages (logged under the name own) drop one level, so a normal plugin
// exit does not show at the default level; the plugin's lines, logged under
// own.<binary>, keep theirs.
type slogSink struct {
	sl  *slog.Logger
	own string
}

func (s *slogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	if name == s.own && level == hclog.Info {
		level = hclog.Debug
	}
	var sl slog.Level
	switch level {
	case hclog.Trace:
		sl = slog.LevelDebug - 4
	case hclog.Debug:
		sl = slog.LevelDebug
	case hclog.Info:
		sl = slog.LevelInfo
	case hclog.Warn:
		sl = slog.LevelWarn
	default:
		sl = slog.LevelError
	}
	ctx := context.Background()
	if !s.sl.Enabled(ctx, sl) {
		return
	}
	s.sl.Log(ctx, sl, strings.TrimSpace(msg), append([]any{"logger", name}, args...)...)
}
