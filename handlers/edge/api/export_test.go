package api

// SetBeforeAttach lets a test act between a resuming stream's catch-up
// from the store and its joining the live tail: the handover's window.
func (s *Server) SetBeforeAttach(f func()) { s.beforeAttach = f }
