package sim

import (
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Simulator is a set of simulated SMS providers behind one HTTP handler,
// plus the background sender that posts their delivery receipts.
type Simulator struct {
	cfg       Config
	log       *slog.Logger
	providers map[string]*providerState // fixed in New, read-only after
	memory    *memory
	// queue holds accepted messages waiting for their receipt, in due order
	// (every receipt is due ReceiptDelay after acceptance, so arrival order
	// is due order and no heap is needed).
	queue chan pendingReceipt
	// instance makes provider message ids unique across restarts; seq makes
	// them unique within one.
	instance string
	seq      atomic.Uint64
	handler  http.Handler
	started  atomic.Bool

	// life guards stopped. Requests that may enqueue receipts register in
	// enqueuers under a read lock while stopped is false; Run sets stopped
	// under the write lock and then waits for enqueuers, so that after the
	// wait nothing can add to queue and the drain sees every receipt.
	life      sync.RWMutex
	stopped   bool
	stopping  chan struct{} // closed with stopped=true; wakes blocked enqueuers
	enqueuers sync.WaitGroup
}

// providerState is one simulated provider: its credentials and counters.
type providerState struct {
	name        string
	apiKey      []byte
	secret      []byte
	callbackURL string
	stats       counters
}

// New returns a simulator for cfg, or cfg.Validate's error. Receipts are
// only sent while Run runs; until then accepted messages wait in the
// queue, and once it is full, submissions wait.
func New(cfg Config) (*Simulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Simulator{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "provider-sim"),
		providers: make(map[string]*providerState, len(cfg.Providers)),
		memory:    newMemory(cfg.DedupWindow),
		queue:     make(chan pendingReceipt, cfg.ReceiptQueue),
		instance:  strings.ToLower(rand.Text()[:8]),
		stopping:  make(chan struct{}),
	}
	base := strings.TrimRight(cfg.CallbackBase, "/")
	for name, p := range cfg.Providers {
		s.providers[name] = &providerState{
			name:        name,
			apiKey:      []byte(p.APIKey),
			secret:      []byte(p.Secret),
			callbackURL: base + "/v1/receipts/" + url.PathEscape(name),
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{provider}/v1/messages", s.submitOne)
	mux.HandleFunc("POST /{provider}/v1/messages/batch", s.submitBatch)
	mux.HandleFunc("GET /stats", s.serveStats)
	s.handler = mux
	return s, nil
}

// Handler returns the simulator's HTTP API: the providers' submit endpoints
// under /{provider}/v1/messages and GET /stats.
func (s *Simulator) Handler() http.Handler { return s.handler }

// Counters are the simulator's totals, for one provider or all of them.
type Counters struct {
	// Submitted counts accepted sends (replays and refusals excluded).
	Submitted int64 `json:"submitted"`
	// ReceiptsSent, ReceiptsFailed and ReceiptsDropped count receipts (one
	// per message part): accepted by the callback; given up after
	// ReceiptMaxAge of refusals; abandoned at shutdown or by a vanished client.
	ReceiptsSent    int64 `json:"receipts_sent"`
	ReceiptsFailed  int64 `json:"receipts_failed"`
	ReceiptsDropped int64 `json:"receipts_dropped"`
	// DuplicateSubmissions counts sends of a (reference, attempt) that was
	// already sent, under another idempotency key or through another
	// provider: each one is an SMS a real handset would receive twice.
	DuplicateSubmissions int64 `json:"duplicate_submissions"`
	// IdempotentReplays counts submissions answered from memory.
	IdempotentReplays int64 `json:"idempotent_replays"`
	// Rejected counts permanent refusals (invalid destination, rejected).
	Rejected int64 `json:"rejected"`
	// TransientFailures counts 503 answers (…0003, shutting down).
	TransientFailures int64 `json:"transient_failures"`
}

// Stats is a snapshot of the counters, in total and by provider.
type Stats struct {
	Counters
	ByProvider map[string]Counters `json:"by_provider"`
}

type counters struct {
	submitted, receiptsSent, receiptsFailed, receiptsDropped atomic.Int64
	duplicates, replays, rejected, transient                 atomic.Int64
}

func (c *counters) snapshot() Counters {
	return Counters{
		Submitted:            c.submitted.Load(),
		ReceiptsSent:         c.receiptsSent.Load(),
		ReceiptsFailed:       c.receiptsFailed.Load(),
		ReceiptsDropped:      c.receiptsDropped.Load(),
		DuplicateSubmissions: c.duplicates.Load(),
		IdempotentReplays:    c.replays.Load(),
		Rejected:             c.rejected.Load(),
		TransientFailures:    c.transient.Load(),
	}
}

// Stats returns the current counters.
func (s *Simulator) Stats() Stats {
	st := Stats{ByProvider: make(map[string]Counters, len(s.providers))}
	for name, p := range s.providers {
		c := p.stats.snapshot()
		st.ByProvider[name] = c
		st.Submitted += c.Submitted
		st.ReceiptsSent += c.ReceiptsSent
		st.ReceiptsFailed += c.ReceiptsFailed
		st.ReceiptsDropped += c.ReceiptsDropped
		st.DuplicateSubmissions += c.DuplicateSubmissions
		st.IdempotentReplays += c.IdempotentReplays
		st.Rejected += c.Rejected
		st.TransientFailures += c.TransientFailures
	}
	return st
}

func (s *Simulator) serveStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

// newID returns a fresh provider message id. Ids drawn for submissions that
// turn out to be replays are simply never used.
func (s *Simulator) newID(p *providerState) string {
	return p.name + "-" + s.instance + "-" + strconv.FormatUint(s.seq.Add(1), 10)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do then
}
