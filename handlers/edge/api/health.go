package api

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"time"
)

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request, _ *RequestContext) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz runs every readiness check concurrently with a short deadline:
// ready means PostgreSQL (and NATS, where the pipeline runs) answer now.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request, _ *RequestContext) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	type result struct {
		Status string `json:"status"`
		Error  string `json:"error,omitempty"`
	}
	out := map[string]result{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	names := make([]string, 0, len(s.deps.Ready))
	for n := range s.deps.Ready {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := result{Status: "ok"}
			if err := s.deps.Ready[n](ctx); err != nil {
				res = result{Status: "failing", Error: err.Error()}
			}
			mu.Lock()
			out[n] = res
			mu.Unlock()
		}()
	}
	wg.Wait()
	status := http.StatusOK
	overall := "ready"
	for _, res := range out {
		if res.Status != "ok" {
			status, overall = http.StatusServiceUnavailable, "not ready"
		}
	}
	body := map[string]any{"status": overall, "checks": out}
	if lag := s.projectionLag(ctx); lag != nil {
		body["projections"] = lag
	}
	return writeJSON(w, status, body)
}
