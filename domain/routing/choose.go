package routing

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/afterok/afterok/domain"
)

// Request describes the attempt of a message that needs a route.
type Request struct {
	MessageID string
	Attempt   int    // 1-based; with MessageID it seeds the weighted pick
	To        string // destination in E.164, e.g. "+4915112345678"
	Country   string // ISO 3166-1 alpha-2 of To, as the number rules derived it; may be empty
	// Excluded lists providers that already failed this message. They stay
	// excluded for the rest of its attempts: a provider that could not carry
	// a message once is the likeliest to fail it again.
	Excluded []string
}

// The reasons a candidate carries in a decision. Support reads them, so they
// are short sentences, not codes.
const (
	reasonChosen        = "chosen"
	reasonChosenProbe   = "chosen as a probe: circuit half-open"
	reasonNotDrawn      = "not drawn in the weighted split"
	reasonLowerPriority = "lower priority"
	reasonFailedEarlier = "failed this message earlier"
	reasonCircuitOpen   = "circuit open"
)

// Choose picks the provider for one attempt of a message. It is pure and
// deterministic: the same table, request and health answers always give the
// same decision, which is what lets a replay reproduce it.
//
// The candidates are the providers of the route that matches req (see Table
// for the precedence). A candidate is ineligible if it is in req.Excluded or
// if health reports its circuit Open; a HalfOpen circuit lets the call
// through as a probe. Among the eligible candidates the best (lowest)
// priority wins, and within it the weights split traffic: the pick is drawn
// from MessageID and Attempt, so over many messages the split follows the
// weights while each message's pick is fixed. A nil health treats every
// circuit as closed; Breaker.Health supplies a real one.
//
// The decision lists every candidate with why it was or was not chosen. On
// failure it still does (except for no_route, which has no candidates), so
// the failure can be explained. Failures, all at StageRouting:
//
//   - no route matches: CodeNoRoute, permanent;
//   - every candidate failed this message: CodeRoutesExhausted, permanent;
//   - otherwise, when the rest are only behind open circuits:
//     CodeProviderUnavailable, transient, so the message is retried later.
func Choose(t *Table, req Request, health func(provider string) State) (domain.RouteDecision, *domain.Failure) {
	r := t.match(req.To, req.Country)
	if r == nil {
		reason := "no route matches the destination"
		if req.Country != "" {
			reason += " or its country " + strings.ToUpper(req.Country)
		}
		return domain.RouteDecision{}, &domain.Failure{
			Code: domain.CodeNoRoute, Reason: reason, Stage: domain.StageRouting, Permanent: true,
		}
	}

	dec := domain.RouteDecision{RouteID: r.ID, Candidates: make([]domain.RouteCandidate, len(r.Providers))}
	best, total, open := 0, 0, 0 // best eligible priority (0: none yet), its weight sum, circuits open
	for i, p := range r.Providers {
		c := domain.RouteCandidate{Provider: p.Name, Priority: p.Priority, Weight: p.Weight}
		switch {
		case slices.Contains(req.Excluded, p.Name):
			c.Reason = reasonFailedEarlier
		case health != nil && health(p.Name) == Open:
			c.Reason = reasonCircuitOpen
			open++
		default:
			c.Eligible = true
			if best == 0 {
				best = p.Priority // providers are sorted by priority: the first eligible is the best
			}
			if p.Priority == best {
				total += p.Weight
			}
		}
		dec.Candidates[i] = c
	}
	if best == 0 {
		return dec, unroutable(r, dec.Candidates, open)
	}

	n := int(draw(purposeRoute, req.MessageID, req.Attempt) % uint64(total))
	chosen := -1
	for i := range dec.Candidates {
		c := &dec.Candidates[i]
		switch {
		case !c.Eligible:
		case c.Priority > best:
			c.Reason = reasonLowerPriority
		case chosen < 0 && n < c.Weight:
			chosen = i
			c.Reason = reasonChosen
			if health != nil && health(c.Provider) == HalfOpen {
				c.Reason = reasonChosenProbe
			}
		default:
			n -= c.Weight
			c.Reason = reasonNotDrawn
		}
	}
	won := dec.Candidates[chosen]
	dec.Provider = won.Provider
	dec.Reason = decisionReason(dec.Candidates, won, total)
	return dec, nil
}

// decisionReason says why the chosen candidate won: its share of its
// priority and, if providers at its priority or better were passed over, that
// this is a failover and from what. It runs per message, so it appends into a
// stack buffer and allocates only the resulting string.
func decisionReason(cands []domain.RouteCandidate, won domain.RouteCandidate, total int) string {
	var arr [96]byte
	b := arr[:0]
	failover := false
	for _, c := range cands {
		if c.Priority > won.Priority {
			break // sorted: the rest were never going to be chosen
		}
		if c.Eligible {
			continue
		}
		if !failover {
			b = append(b, "failover: "...)
			failover = true
		} else {
			b = append(b, ", "...)
		}
		b = append(b, c.Provider...)
		if c.Reason == reasonCircuitOpen {
			b = append(b, " circuit open"...)
		} else {
			b = append(b, " failed this message"...)
		}
	}
	if failover {
		b = append(b, "; "...)
	}
	b = append(b, "priority "...)
	b = strconv.AppendInt(b, int64(won.Priority), 10)
	b = append(b, ", weight "...)
	b = strconv.AppendInt(b, int64(won.Weight), 10)
	b = append(b, " of "...)
	b = strconv.AppendInt(b, int64(total), 10)
	return string(b)
}

// unroutable explains why no candidate of r is eligible. Only when every one
// has failed this message is that final; a circuit may close again, so if any
// is merely behind an open circuit the failure is transient.
func unroutable(r *Route, cands []domain.RouteCandidate, open int) *domain.Failure {
	if open == 0 {
		return &domain.Failure{
			Code:      domain.CodeRoutesExhausted,
			Reason:    fmt.Sprintf("every provider of route %s failed this message: %s", r.ID, names(cands, reasonFailedEarlier)),
			Stage:     domain.StageRouting,
			Permanent: true,
		}
	}
	reason := fmt.Sprintf("route %s: circuit open for %s", r.ID, names(cands, reasonCircuitOpen))
	if failed := names(cands, reasonFailedEarlier); failed != "" {
		reason += "; failed this message earlier: " + failed
	}
	return &domain.Failure{Code: domain.CodeProviderUnavailable, Reason: reason, Stage: domain.StageRouting}
}

func names(cands []domain.RouteCandidate, reason string) string {
	var s []string
	for _, c := range cands {
		if c.Reason == reason {
			s = append(s, c.Provider)
		}
	}
	return strings.Join(s, ", ")
}
