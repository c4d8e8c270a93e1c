package domain

// RouteDecision is what a worker decided when it routed one attempt of a
// message, recorded in MessageRouted so that support can see not only which
// provider was chosen but which were considered and why the others were not.
type RouteDecision struct {
	RouteID    string           `json:"route_id"`
	Provider   string           `json:"provider"`
	Reason     string           `json:"reason"`
	Candidates []RouteCandidate `json:"candidates"`
}

// RouteCandidate is one provider the route table offered for a destination.
type RouteCandidate struct {
	Provider string `json:"provider"`
	Priority int    `json:"priority"`
	Weight   int    `json:"weight"`
	// Eligible is false when the candidate was excluded; Reason says why
	// ("failed attempt 1", "circuit open", "chosen", "lower priority", ...).
	Eligible bool   `json:"eligible"`
	Reason   string `json:"reason"`
}
