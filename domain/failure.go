package domain

// Stage names the lifecycle step at which a message failed.
type Stage string

// The stages a failure can be attributed to.
const (
	StageRouting  Stage = "routing"
	StageSubmit   Stage = "submit"
	StageDelivery Stage = "delivery"
	StageExpiry   Stage = "expiry"
)

// Normalized failure codes. Providers speak their own dialects; adapters map
// them onto these so that support, retries and statistics see one taxonomy.
const (
	CodeInvalidDestination  = "invalid_destination"  // permanent: the number cannot receive SMS
	CodeUndeliverable       = "undeliverable"        // permanent: the network gave up on it
	CodeRejected            = "rejected"             // permanent: the provider refused the content or sender
	CodeProviderUnavailable = "provider_unavailable" // transient: 5xx, connection refused
	CodeTimeout             = "timeout"              // transient: no answer in time
	CodeThrottled           = "throttled"            // transient: the provider asked us to slow down
	CodeDeliveryDelayed     = "delivery_failed_temporarily"
	CodeNoRoute             = "no_route"           // permanent: no route serves the destination
	CodeRoutesExhausted     = "routes_exhausted"   // permanent: every route failed this message
	CodeAttemptsExhausted   = "attempts_exhausted" // permanent: the retry budget is spent
	CodeExpired             = "expired"            // permanent: validity elapsed before a final state
	CodeDeadLettered        = "dead_lettered"      // permanent: the job hit the queue's delivery limit
)

// Failure is the normalized description of why an attempt did not succeed.
type Failure struct {
	Code      string `json:"code"`
	Reason    string `json:"reason"`
	Stage     Stage  `json:"stage"`
	Permanent bool   `json:"permanent"`
	// Provider and ProviderCode keep the provider's own words, for support.
	Provider     string `json:"provider,omitempty"`
	ProviderCode string `json:"provider_code,omitempty"`
}
