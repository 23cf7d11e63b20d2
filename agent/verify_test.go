package agent

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/watch"
)

// At start, only a refused token (exit 3) and a slug the server does not
// know (a config error, exit 2) end the agent. Any other answer, however
// odd (a proxy's page, a body too large, a 500), is what the pipeline
// retries later: the agent starts and waits for the server.
func TestVerifyServerStartsOnAnOddAnswer(t *testing.T) {
	tests := []struct {
		name   string
		answer func(w http.ResponseWriter)
		want   func(error) bool
	}{
		{"a proxy's page", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html>login to the proxy</html>"))
		}, func(err error) bool { return err == nil }},
		{"a 400", func(w http.ResponseWriter) { http.Error(w, "bad request", http.StatusBadRequest) }, func(err error) bool { return err == nil }},
		{"a refused token", func(w http.ResponseWriter) {
			http.Error(w, `{"detail":"Invalid token."}`, http.StatusUnauthorized)
		}, func(err error) bool { return errors.Is(err, gcapi.ErrUnauthorized) }},
		{"no such archive", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`{"count":0,"next":null,"previous":null,"results":[]}`))
		}, func(err error) bool { var ce *ConfigError; return errors.As(err, &ce) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { tt.answer(w) }))
			defer srv.Close()
			c, err := gcapi.New(srv.URL, "token", gcapi.WithRetry(gcapi.RetryPolicy{MaxAttempts: 1}))
			if err != nil {
				t.Fatal(err)
			}
			cfg := &config.Config{Watch: []watch.Spec{{Archive: "a", Interface: "ct"}}}
			if err := verifyServer(t.Context(), c, cfg, slog.New(slog.DiscardHandler)); !tt.want(err) {
				t.Errorf("verifyServer = %v", err)
			}
		})
	}
}
