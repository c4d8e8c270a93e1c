package storetest

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"sync"
)

// Logs captures the JSON log lines of a system under test, written from
// any number of its goroutines, so a test can check what a line names.
type Logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Logger returns a logger that writes JSON lines into l, at every level.
func (l *Logs) Logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Write is io.Writer, safe for concurrent use.
func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// Lines returns every line written so far that is a JSON object.
func (l *Logs) Lines() []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for line := range bytes.Lines(l.b.Bytes()) {
		var m map[string]any
		if json.Unmarshal(line, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// Find returns the first line whose msg is msg, or nil.
func (l *Logs) Find(msg string) map[string]any {
	for _, m := range l.Lines() {
		if m["msg"] == msg {
			return m
		}
	}
	return nil
}

// String is everything written, for a failure message.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
