package projections

import "github.com/afterok/afterok/eventstore"

// chainProblems returns what is wrong with a stream's hash chain (nil:
// intact), recomputed by the store's own verification from the events as
// stored.
func chainProblems(evs []StoredEvent) []string {
	links := make([]eventstore.ChainLink, len(evs))
	for i, e := range evs {
		links[i] = eventstore.ChainLink{Stream: e.Stream, Version: e.Version, ID: e.ID, Type: e.Type,
			SchemaVersion: e.SchemaVersion, RecordedAt: e.RecordedAt, Data: e.Data, Metadata: e.Metadata,
			PrevHash: e.PrevHash, Hash: e.Hash}
	}
	var out []string
	for _, p := range eventstore.CheckChain(links) {
		out = append(out, p.String())
	}
	return out
}
