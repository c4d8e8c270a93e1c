package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
	"golang.org/x/time/rate"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

// runBench is `afterok bench`: a load generator against a running afterok
// (make run). It submits N messages in orders of K from C clients, follows
// the account's final events over the public SSE stream, and reports accept
// latency, end-to-end throughput (first POST to last final state) and the
// time to drain after the last 202.
func runBench(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("bench", env)
	url := fs.String("url", "http://"+env.cfg.Addr, "the API to load")
	key := fs.String("key", "", "API key to use (default: a fresh bench account in DATABASE_URL)")
	total := fs.Int("messages", 20_000, "messages to send")
	size := fs.Int("order-size", 100, "messages per order")
	clients := fs.Int("clients", 8, "concurrent clients")
	drainFor := fs.Duration("timeout", 10*time.Minute, "give up waiting for final states after this")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	offered := fs.Float64("rate", 0, "offer at most this many messages/s (0: as fast as the clients go); "+
		"below what the system executes, it measures the steady state instead of a backlog")
	simURL := fs.String("sim-url", "http://"+env.cfg.SimAddr, "the provider simulator, for its duplicate_submissions and its CPU "+
		"(run it out of process with `afterok provider-sim` to see its share apart from afterok's)")
	hookAddr := fs.String("webhook-receiver", "", "listen here (e.g. 127.0.0.1:0) with a callback receiver registered for every "+
		"order and message event of the bench account, and report callback lag and rate (the server needs AFTEROK_WEBHOOK_ALLOW_PRIVATE, as afterok dev sets)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *total < 1 || *size < 1 || *clients < 1 || *offered < 0 {
		return fmt.Errorf("%w: --messages, --order-size and --clients must be positive, --rate not negative", errUsage)
	}
	pace := rate.NewLimiter(rate.Inf, *size)
	if *offered > 0 {
		pace = rate.NewLimiter(rate.Limit(*offered), *size)
	}
	if *key == "" {
		pool, err := connect(ctx, env, "bench")
		if err != nil {
			return err
		}
		c, err := accounts.New(eventstore.New(pool), time.Now).Create(ctx, accounts.NewAccount{Name: "bench",
			Credit: domain.Money{AmountMicros: 1 << 50, Currency: "EUR"}})
		pool.Close()
		if err != nil {
			return err
		}
		*key = c.APIKey
	}
	b := &bench{url: strings.TrimRight(*url, "/"), key: *key, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *clients * 2}},
		accepted: make(map[string]time.Time, *total)}
	var hooks *benchReceiver
	if *hookAddr != "" {
		var err error
		if hooks, err = startBenchReceiver(*hookAddr); err != nil {
			return err
		}
		defer hooks.close()
		if err := hooks.register(ctx, b); err != nil {
			return err
		}
	}
	cpu := newCPUSplit(b.url, *simURL, env.cfg.DatabaseURL)
	sim0, simErr := simStats(ctx, b.client, *simURL)

	// Follow final states first, so that none is missed.
	finals := make(chan final, 4096)
	followCtx, stopFollow := context.WithCancel(ctx)
	defer stopFollow()
	ready := make(chan error, 1)
	go b.follow(followCtx, ready, finals)
	if err := <-ready; err != nil {
		return fmt.Errorf("event stream: %w", err)
	}

	bar := newBar(env, *total)
	orders := (*total + *size - 1) / *size
	next := atomic.Int64{}
	var mu sync.Mutex
	var latencies []time.Duration
	var failed []error
	var lastAccept time.Time
	start := time.Now()
	var wg sync.WaitGroup
	for range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= orders {
					return
				}
				n := min(*size, *total-i**size)
				if pace.WaitN(ctx, n) != nil {
					return
				}
				d, err := b.post(ctx, i, n)
				mu.Lock()
				if err != nil {
					failed = append(failed, err)
				} else {
					latencies = append(latencies, d)
					lastAccept = time.Now()
				}
				mu.Unlock()
			}
		}()
	}
	// Count finals while orders go out.
	done := 0
	var lastFinal time.Time
	var finalTimes []time.Time
	var endToEnd []time.Duration
	posted := make(chan struct{})
	go func() { wg.Wait(); close(posted) }()
	deadline := time.NewTimer(*drainFor)
	defer deadline.Stop()
	want := *total
wait:
	for done < want {
		select {
		case f := <-finals:
			done++
			lastFinal = f.at
			finalTimes = append(finalTimes, f.at)
			if d, ok := b.since(f.message, f.at); ok {
				endToEnd = append(endToEnd, d)
			}
			_ = bar.Add(1)
		case <-posted:
			posted = nil
			mu.Lock()
			want -= len(failed) * *size // a refused order sends nothing
			mu.Unlock()
		case <-deadline.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	_ = bar.Finish()
	stopFollow()
	if hooks != nil {
		// The order completions and the last final states' callbacks
		// come after the final states: wait until none came for 10 s.
		hooks.drain(ctx, 10*time.Second)
	}
	elapsed := time.Since(start).Seconds()
	slices.Sort(latencies)
	slices.Sort(endToEnd)
	r := benchReport{Messages: *total, OrderSize: *size, Clients: *clients, OfferedRate: *offered, Orders: orders, Final: done,
		RefusedOrders: len(failed), CPUs: runtime.NumCPU(), Host: hostname()}
	if len(latencies) > 0 {
		r.AcceptP50 = ms(pct(latencies, 0.5))
		r.AcceptP90 = ms(pct(latencies, 0.9))
		r.AcceptP99 = ms(pct(latencies, 0.99))
		r.AcceptMax = ms(latencies[len(latencies)-1])
		r.AcceptSeconds = lastAccept.Sub(start).Seconds()
		r.AcceptedPerSecond = float64(len(latencies)**size) / r.AcceptSeconds
	}
	if done > 0 {
		r.EndToEndSeconds = lastFinal.Sub(start).Seconds()
		r.EndToEndPerSecond = float64(done) / r.EndToEndSeconds
		r.DrainSeconds = max(0, lastFinal.Sub(lastAccept).Seconds())
	}
	if len(endToEnd) > 0 {
		r.EndToEndP50 = ms(pct(endToEnd, 0.5))
		r.EndToEndP99 = ms(pct(endToEnd, 0.99))
	}
	r.Sustained60s, r.SustainedSeconds = sustained(finalTimes, time.Minute)
	r.CPU = cpu.shares(elapsed)
	r.CPUNotes = cpu.notes
	r.Load = loadAverage()
	if sim1, err := simStats(ctx, b.client, *simURL); err == nil && simErr == nil {
		d := sim1 - sim0
		r.DuplicateSubmissions = &d
	}
	if len(failed) > 0 {
		r.FirstError = failed[0].Error()
	}
	if hooks != nil {
		r.Webhooks = hooks.report(lastFinal)
	}
	if *asJSON {
		return json.NewEncoder(env.stdout).Encode(r)
	}
	fmt.Fprint(env.stdout, r.String())
	if done < want {
		return fmt.Errorf("only %d of %d messages reached a final state", done, want)
	}
	return nil
}

type bench struct {
	url, key string
	client   *http.Client

	mu       sync.Mutex
	accepted map[string]time.Time // message id → when its order was posted
}

// since is how long message id took from its order's POST to at.
func (b *bench) since(id string, at time.Time) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.accepted[id]
	if ok {
		delete(b.accepted, id)
	}
	return at.Sub(t), ok
}

// final is a message's final event as the bench saw it arrive.
type final struct {
	message string
	at      time.Time
}

// post sends order i of n messages to ordinary (non-test) numbers.
func (b *bench) post(ctx context.Context, i, n int) (time.Duration, error) {
	var body bytes.Buffer
	body.WriteString(`{"to":[`)
	for j := range n {
		if j > 0 {
			body.WriteByte(',')
		}
		// …0100 upwards: never one of the simulator's special endings.
		fmt.Fprintf(&body, `"+49151%04d%04d"`, i%10_000, 100+j%9_000)
	}
	body.WriteString(`],"body":"Your afterok verification code is 123456."}`)
	req, _ := http.NewRequestWithContext(ctx, "POST", b.url+"/v1/orders", &body)
	req.Header.Set("Authorization", "Bearer "+b.key)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	for attempt := 0; ; attempt++ {
		res, err := b.client.Do(req)
		if err != nil {
			return 0, err
		}
		var accepted struct {
			Messages []struct {
				ID string `json:"message_id"`
			} `json:"messages"`
		}
		if res.StatusCode == http.StatusAccepted {
			_ = json.NewDecoder(res.Body).Decode(&accepted)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if len(accepted.Messages) > 0 {
			b.mu.Lock()
			for _, m := range accepted.Messages {
				b.accepted[m.ID] = start
			}
			b.mu.Unlock()
		}
		if res.StatusCode == http.StatusTooManyRequests && attempt < 100 {
			time.Sleep(100 * time.Millisecond) // the account's rate limit: back off as a client would
			req.Body, _ = req.GetBody()
			start = time.Now()
			continue
		}
		if res.StatusCode != http.StatusAccepted {
			return 0, fmt.Errorf("order %d: status %d", i, res.StatusCode)
		}
		return time.Since(start), nil
	}
}

// follow reads the account's final message events from the SSE stream and
// sends the time each arrived. It reconnects with Last-Event-ID.
func (b *bench) follow(ctx context.Context, ready chan<- error, finals chan<- final) {
	last := ""
	seen := map[string]bool{}
	first := true
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, "GET", b.url+"/v1/events/stream?type="+
			strings.Join(domain.TypesOf(domain.MessageDelivered{}, domain.MessageFailed{}), ","), nil)
		req.Header.Set("Authorization", "Bearer "+b.key)
		if last != "" {
			req.Header.Set("Last-Event-ID", last)
		}
		res, err := b.client.Do(req)
		if err == nil && res.StatusCode != 200 {
			err = fmt.Errorf("status %d", res.StatusCode)
			res.Body.Close()
		}
		if first {
			ready <- err
			first = false
			if err != nil {
				return
			}
		}
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				last = line[4:]
			case strings.HasPrefix(line, "data: "):
				var ev struct {
					Stream string `json:"stream"`
				}
				if json.Unmarshal([]byte(line[6:]), &ev) == nil && !seen[ev.Stream] {
					seen[ev.Stream] = true
					select {
					case finals <- final{message: strings.TrimPrefix(ev.Stream, "message-"), at: time.Now()}:
					case <-ctx.Done():
						return
					}
				}
			}
		}
		res.Body.Close()
	}
}

type benchReport struct {
	Messages          int     `json:"messages"`
	OrderSize         int     `json:"order_size"`
	Clients           int     `json:"clients"`
	OfferedRate       float64 `json:"offered_rate,omitempty"` // messages/s, 0 = unpaced
	Orders            int     `json:"orders"`
	RefusedOrders     int     `json:"refused_orders"`
	FirstError        string  `json:"first_error,omitempty"`
	AcceptP50         float64 `json:"accept_p50_ms"`
	AcceptP90         float64 `json:"accept_p90_ms"`
	AcceptP99         float64 `json:"accept_p99_ms"`
	AcceptMax         float64 `json:"accept_max_ms"`
	AcceptSeconds     float64 `json:"accept_seconds"`
	AcceptedPerSecond float64 `json:"accepted_messages_per_second"`
	Final             int     `json:"final_messages"`
	EndToEndSeconds   float64 `json:"end_to_end_seconds"`
	EndToEndPerSecond float64 `json:"end_to_end_messages_per_second"`
	DrainSeconds      float64 `json:"drain_seconds"`
	// End to end per message: its order's POST to its final event.
	EndToEndP50 float64 `json:"end_to_end_p50_ms"`
	EndToEndP99 float64 `json:"end_to_end_p99_ms"`
	// The most final states in any 60 s of the run, per second (0 when the
	// run was shorter: then SustainedSeconds says how long it lasted).
	Sustained60s     float64 `json:"sustained_60s_messages_per_second"`
	SustainedSeconds float64 `json:"finals_span_seconds"`
	// The simulator's duplicate_submissions during the run (an SMS a
	// handset would get twice); absent when the simulator was not reached.
	DuplicateSubmissions *int64     `json:"duplicate_submissions,omitempty"`
	CPU                  []CPUShare `json:"cpu,omitempty"`
	CPUNotes             []string   `json:"cpu_notes,omitempty"`
	Load                 string     `json:"loadavg,omitempty"` // /proc/loadavg at the end
	CPUs                 int        `json:"cpus"`
	Host                 string     `json:"host"`
	// Webhooks is the callback receiver's measure (--webhook-receiver).
	Webhooks *webhookReport `json:"webhooks,omitempty"`
}

func (r benchReport) String() string {
	s := fmt.Sprintf(`afterok bench: %d messages in %d orders of %d from %d clients (%d CPUs, %s)
  accept latency   p50 %.1f ms   p90 %.1f ms   p99 %.1f ms   max %.1f ms
  accepted         %.0f messages/s (all 202s within %.2f s)
  end to end       %d final in %.2f s: %.0f messages/s from the first POST to the last final state
  drain            %.2f s after the last 202
`, r.Messages, r.Orders, r.OrderSize, r.Clients, r.CPUs, r.Host, r.AcceptP50, r.AcceptP90, r.AcceptP99, r.AcceptMax,
		r.AcceptedPerSecond, r.AcceptSeconds, r.Final, r.EndToEndSeconds, r.EndToEndPerSecond, r.DrainSeconds)
	if r.OfferedRate > 0 {
		s += fmt.Sprintf("  offered          %.0f messages/s (paced)\n", r.OfferedRate)
	}
	if r.RefusedOrders > 0 {
		s += fmt.Sprintf("  refused orders   %d (first: %s)\n", r.RefusedOrders, r.FirstError)
	}
	s += fmt.Sprintf("  per message      p50 %.0f ms   p99 %.0f ms from its order's POST to its final state\n", r.EndToEndP50, r.EndToEndP99)
	if r.Sustained60s > 0 {
		s += fmt.Sprintf("  sustained        %.0f messages/s: the most final states in any 60 s of the run\n", r.Sustained60s)
	} else {
		s += fmt.Sprintf("  sustained        n/a: final states came over %.1f s, less than 60 s (send more --messages)\n", r.SustainedSeconds)
	}
	for _, c := range r.CPU {
		s += fmt.Sprintf("  cpu              %-30s %6.1f s  %.2f cores\n", c.Name, c.Seconds, c.Cores)
	}
	for _, n := range r.CPUNotes {
		s += fmt.Sprintf("  cpu              (%s)\n", n)
	}
	if r.Load != "" {
		s += fmt.Sprintf("  load average     %s\n", r.Load)
	}
	if r.DuplicateSubmissions != nil {
		s += fmt.Sprintf("  simulator        duplicate_submissions %d\n", *r.DuplicateSubmissions)
	} else {
		s += "  simulator        not reached (--sim-url): duplicate_submissions unknown\n"
	}
	if r.Webhooks != nil {
		s += r.Webhooks.String()
	}
	s += "  then check       afterok verify (hash chains, versions, balances; --projections for the read models)\n"
	return s
}

// sustained is the largest number of times within any window, per second
// of the window; and the span of the times when it is shorter than window.
func sustained(times []time.Time, window time.Duration) (perSecond, span float64) {
	if len(times) == 0 {
		return 0, 0
	}
	span = times[len(times)-1].Sub(times[0]).Seconds()
	if span < window.Seconds() {
		return 0, span
	}
	best, lo := 0, 0
	for hi, t := range times {
		for t.Sub(times[lo]) > window {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return float64(best) / window.Seconds(), span
}

// simStats reads the simulator's duplicate_submissions counter.
func simStats(ctx context.Context, c *http.Client, simURL string) (int64, error) {
	if simURL == "" {
		return 0, errors.New("no simulator")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(simURL, "/")+"/stats", nil)
	if err != nil {
		return 0, err
	}
	res, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var st struct {
		Duplicates *int64 `json:"duplicate_submissions"`
	}
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil || st.Duplicates == nil || res.StatusCode != 200 {
		return 0, fmt.Errorf("simulator stats: status %d", res.StatusCode)
	}
	return *st.Duplicates, nil
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func pct(d []time.Duration, p float64) time.Duration { return d[int(float64(len(d)-1)*p)] }
func ms(d time.Duration) float64                     { return float64(d.Microseconds()) / 1000 }

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// newBar draws progress on a terminal and stays silent otherwise.
func newBar(env *environment, n int) *progressbar.ProgressBar {
	f, ok := env.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return progressbar.NewOptions(n, progressbar.OptionSetWriter(io.Discard))
	}
	return progressbar.NewOptions(n, progressbar.OptionSetWriter(f), progressbar.OptionSetDescription("final states"),
		progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("msg"),
		progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
}
