package projections

// RebuildKey exposes the rebuild lock's key to the external tests.
func RebuildKey(p Projection) int64 { return p.rebuildKey() }
