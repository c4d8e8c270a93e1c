package api

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// shutdownTimeout bounds how long Run waits, once ctx ends, for the
// requests in flight to finish.
const shutdownTimeout = 15 * time.Second

// Run serves the API on l until ctx ends, then shuts down in order: stop
// accepting connections, end the event streams (they never go idle by
// themselves, and Shutdown would wait for them until its timeout), let the
// requests in flight finish, and stop the shared tail's reader. It returns
// when nothing of the server runs any more. The caller binds l, after
// every role is built, so that a bad configuration never opens the port.
func (s *Server) Run(ctx context.Context, l net.Listener) error {
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	srv.RegisterOnShutdown(s.live.close)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	var err error
	select {
	case err = <-served:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
		err = <-served
	}
	// Shutdown called it already; again is harmless, and it also stops
	// the reader when Serve failed by itself.
	s.live.close()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
