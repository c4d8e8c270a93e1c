package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

// The cluster tests run afterok as a deployment that scales out does:
// two `afterok serve --roles all` OS processes of the binary, built once
// per test run, against one PostgreSQL database and a three-node JetStream
// cluster with the streams at three replicas, the provider simulator as a
// process of its own, and a load balancer in front of the two APIs that
// both the test's client and the simulator's receipt callbacks go through.
// They own every server they stop or kill (a throwaway PostgreSQL cluster,
// the JetStream nodes, the processes), and their names stay out of the
// Makefile's NATS_TESTS: they never use the external NATS.

// clusterHarness is that deployment. Its harness carries what the
// end-to-end and outage checks need: the database, the front's address
// as the API, the account and the simulator's URL.
type clusterHarness struct {
	*harness
	js      *storetest.JetStreamCluster
	prefix  string
	bin     string
	dir     string
	front   *front
	simProc *process
	procs   []*process
	hooks   *callbackReceiver
	// env is what every afterok process of the deployment is given.
	env   map[string]string
	began time.Time
}

// step logs how long the test has run when it reaches a step, to show
// where a slow run spent its time.
func (c *clusterHarness) step(what string) {
	c.t.Logf("%6.1fs %s", time.Since(c.began).Seconds(), what)
}

// clusterProcesses is how many processes run every role.
const clusterProcesses = 2

func newClusterHarness(t *testing.T) *clusterHarness {
	began := time.Now()
	bin := afterokBinary(t)
	t.Logf("%6.1fs binary built", time.Since(began).Seconds())
	pg := storetest.NewCluster(t)
	db := pg.NewDB(t, eventstore.PoolConfig{MaxConns: 8})
	t.Logf("%6.1fs PostgreSQL ready", time.Since(began).Seconds())
	c := &clusterHarness{
		harness: &harness{t: t, db: db, credit: 1_000_000_000},
		js:      storetest.NewJetStreamCluster(t, 3),
		prefix:  strings.ToLower(storetest.RandomName("t")),
		bin:     bin, dir: t.TempDir(), began: began,
	}
	c.harness.verify = c.verifyCommand
	c.step("binary, PostgreSQL and JetStream cluster ready")
	var apis []string
	for range clusterProcesses {
		apis = append(apis, freeAddr(t))
	}
	c.front = newFront(t, apis)
	c.cfg.Addr = strings.TrimPrefix(c.front.URL, "http://")
	simAddr := freeAddr(t)
	c.simURL = "http://" + simAddr
	c.env = map[string]string{
		"DATABASE_URL":          db.URL,
		"NATS_URL":              c.js.URL(),
		"AFTEROK_NATS_REPLICAS": strconv.Itoa(c.js.Size()),
		"AFTEROK_PREFIX":        c.prefix,
		"AFTEROK_SIM_ADDR":      simAddr,
		"AFTEROK_DB_MAX_CONNS":  "12",
		"AFTEROK_RATE_LIMIT":    "10000", "AFTEROK_RATE_BURST": "10000",
		"AFTEROK_RETRY_BASE": "50ms", "AFTEROK_RETRY_MAX": "200ms",
		// A killed worker's jobs come back after 10 s. Not the 3 s of the
		// one-process harness: a worker does not extend the jobs of a batch
		// it is working on, so on a loaded machine a batch slower than the
		// ack wait is handed to the other process while the first still
		// works on it, again and again, until a job reaches its delivery
		// limit and is dead-lettered (seen at 3 s with a load of 40).
		"AFTEROK_DISPATCH_ACK_WAIT":     "10s",
		"AFTEROK_NATS_EVENTS_MAX_BYTES": strconv.Itoa(storetest.TestEventsMaxBytes),
		"AFTEROK_SIM_SUBMIT_LATENCY":    "2ms", "AFTEROK_SIM_RECEIPT_DELAY": "20ms",
		"AFTEROK_LOG_FORMAT": "json",
		// The receiver is on loopback; a killed process's claimed callbacks
		// are due again 15 s after their claim, not the default 2 min.
		"AFTEROK_WEBHOOK_ALLOW_PRIVATE": "true", "AFTEROK_WEBHOOK_LEASE": "15s",
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.logProcesses()
		}
	})
	c.simProc = c.start("sim", nil, "provider-sim", "--callback", c.front.URL)
	c.waitReady(c.simProc, c.simURL+"/stats")
	for i, addr := range apis {
		p := c.start(fmt.Sprintf("afterok-%d", i+1), map[string]string{"AFTEROK_ADDR": addr,
			"AFTEROK_DATA_DIR": filepath.Join(c.dir, fmt.Sprintf("data-%d", i+1))}, "serve", "--roles", "all")
		p.api = "http://" + addr
		c.waitReady(p, p.api+"/healthz")
		c.procs = append(c.procs, p)
	}
	code, out, errOut := c.command("accounts", "create", "--name", "cluster", "--credit", "1000", "--json")
	require.Equal(t, 0, code, errOut)
	require.NoError(t, json.Unmarshal([]byte(out), &c.key))
	c.registerReceiver()
	c.step("processes serving, account open, its webhook endpoint registered")
	return c
}

// start runs the binary with the deployment's environment and extra.
func (c *clusterHarness) start(name string, extra map[string]string, args ...string) *process {
	c.t.Helper()
	log, err := os.Create(filepath.Join(c.dir, name+".log"))
	require.NoError(c.t, err)
	cmd := exec.Command(c.bin, args...)
	cmd.Env = c.environ(extra)
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(c.t, cmd.Start())
	p := &process{name: name, cmd: cmd, log: log.Name(), done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	c.t.Cleanup(func() {
		if p.exitedByItself() {
			c.t.Errorf("%s exited without being stopped: %v", p.name, p.err)
		}
		p.stop(c.t)
	})
	return p
}

// command runs the binary to its end (accounts, verify) and returns its
// exit code and output.
func (c *clusterHarness) command(args ...string) (int, string, string) {
	c.t.Helper()
	cmd := exec.Command(c.bin, args...)
	cmd.Env = c.environ(nil)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String(), errOut.String()
	}
	require.NoError(c.t, err)
	return 0, out.String(), errOut.String()
}

// environ is the test's environment without any afterok setting of the
// machine's (NATS_URL names the shared server there), plus the
// deployment's and extra.
func (c *clusterHarness) environ(extra map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "AFTEROK_") && k != "NATS_URL" && k != "DATABASE_URL" {
			env = append(env, kv)
		}
	}
	for _, m := range []map[string]string{c.env, extra} {
		for k, v := range m {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// waitReady polls url until it answers 200, failing at once if the
// process exits.
func (c *clusterHarness) waitReady(p *process, url string) {
	c.t.Helper()
	storetest.Poll(c.t, time.Minute, func() (bool, string) {
		if p.exited() {
			c.t.Fatalf("%s exited at start: %v\n%s", p.name, p.err, p.tail(40))
		}
		res, err := http.Get(url)
		if err != nil {
			return false, err.Error()
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK, fmt.Sprintf("%s: %d", url, res.StatusCode)
	})
}

// verifyCommand runs `afterok verify --projections`: every hash chain,
// version and aggregate, and every read-model row the two processes'
// projectors wrote, against a fresh fold. The harness's invariants run it.
func (c *clusterHarness) verifyCommand() {
	c.t.Helper()
	code, out, errOut := c.command("verify", "--projections", "--json")
	require.Equal(c.t, 0, code, "afterok verify --projections:\n%s\n%s", out, errOut)
}

// checkReplicated: the afterok processes created every stream at three
// replicas, one on each node, and each replica is current.
func (c *clusterHarness) checkReplicated(js jetstream.JetStream, timeout time.Duration) {
	c.t.Helper()
	for _, s := range []string{strings.ToUpper(c.prefix) + "_EVENTS", strings.ToUpper(c.prefix) + "_DISPATCH"} {
		info := c.js.WaitCurrent(c.t, js, s, timeout)
		require.Equal(c.t, c.js.Size(), info.Config.Replicas, s)
	}
}

// openMessages counts the orders' messages without a final state yet.
func (c *clusterHarness) openMessages(orders []string) int {
	c.t.Helper()
	var n int
	require.NoError(c.t, c.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM (
		SELECT stream_id FROM events WHERE metadata->>'correlation_id' = ANY($1) AND stream_id LIKE 'message-%'
		GROUP BY stream_id HAVING count(*) FILTER (WHERE type IN ('MessageDelivered','MessageFailed','MessageCanceled')) = 0) x`,
		orders).Scan(&n))
	return n
}

// leases counts the consumers' partitions and those of them that the
// process holds with a live lease.
func (c *clusterHarness) leases(p *process) (held, total int) {
	c.t.Helper()
	// An owner is "host/pid/random" (eventstore's ownerID).
	require.NoError(c.t, c.db.Pool.QueryRow(context.Background(), `SELECT
		count(*) FILTER (WHERE split_part(owner, '/', 2) = $1 AND lease_until > clock_timestamp()), count(*)
		FROM consumer_partitions`, strconv.Itoa(p.cmd.Process.Pid)).Scan(&held, &total))
	require.Positive(c.t, total, "the consumers have no partitions")
	return held, total
}

// counter sums a counter's samples over its labels in the process's
// /metrics.
func (c *clusterHarness) counter(p *process, name string) float64 {
	c.t.Helper()
	res, err := http.Get(p.api + "/metrics")
	require.NoError(c.t, err)
	defer res.Body.Close()
	var sum float64
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		series, value, ok := strings.Cut(sc.Text(), " ")
		if ok && (series == name || strings.HasPrefix(series, name+"{")) {
			v, err := strconv.ParseFloat(value, 64)
			require.NoError(c.t, err, sc.Text())
			sum += v
		}
	}
	require.NoError(c.t, sc.Err())
	return sum
}

// logProcesses shows the warnings and errors each process logged last.
func (c *clusterHarness) logProcesses() {
	for _, p := range append([]*process{c.simProc}, c.procs...) {
		if p != nil {
			c.t.Logf("%s, its last warnings and errors:\n%s", p.name, p.tail(25))
		}
	}
	c.t.Log(c.js.Problems(25))
}

// process is one OS process of the binary.
type process struct {
	name     string
	api      string // its API's URL, for a serve process
	cmd      *exec.Cmd
	log      string
	done     chan struct{}
	err      error // once done is closed
	signaled atomic.Bool
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) exitedByItself() bool { return p.exited() && !p.signaled.Load() }

// kill is kill -9: no shutdown, no drain, no deferred function runs.
func (p *process) kill(t *testing.T) {
	t.Helper()
	p.signaled.Store(true)
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
	<-p.done
}

// stop asks the process to shut down as an operator would (SIGTERM), and
// kills it if it has not stopped within a minute.
func (p *process) stop(t *testing.T) {
	if p.exited() {
		return
	}
	p.signaled.Store(true)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Errorf("%s did not stop within a minute of SIGTERM", p.name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail is the last n warning and error lines of the process's log.
func (p *process) tail(n int) string {
	f, err := os.Open(p.log)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.Contains(l, `"level":"INFO"`) && !strings.Contains(l, `"level":"DEBUG"`) {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// front is the load balancer a deployment puts in front of its API
// processes: round robin over them, passing over one that refuses the
// connection (a killed process) for the next. It opens a connection per
// request, so a request never goes out on a connection to a dead process.
type front struct {
	URL      string
	backends []string
	next     atomic.Uint32
}

func newFront(t *testing.T, backends []string) *front {
	f := &front{backends: backends}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: "http", Host: "afterok"}) // the dialer picks the process
		},
		Transport: &http.Transport{DialContext: f.dial, DisableKeepAlives: true},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) {
			w.WriteHeader(http.StatusBadGateway) // the process died while answering
		},
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

func (f *front) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	first := int(f.next.Add(1))
	var d net.Dialer
	var err error
	for i := range f.backends {
		var c net.Conn
		if c, err = d.DialContext(ctx, "tcp", f.backends[(first+i)%len(f.backends)]); err == nil {
			return c, nil
		}
	}
	return nil, err
}

// The binary the cluster tests run, built once per test run (without the
// race detector: six processes on two cores), removed by TestMain.
var binary struct {
	once      sync.Once
	dir, path string
	err       error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binary.dir != "" {
		_ = os.RemoveAll(binary.dir)
	}
	os.Exit(code)
}

func afterokBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		if binary.dir, binary.err = os.MkdirTemp("", "afterok-bin-"); binary.err != nil {
			return
		}
		// go test puts its own toolchain first on the test's PATH.
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		binary.path = filepath.Join(binary.dir, "afterok")
		if out, err := exec.Command(goTool, "build", "-o", binary.path, ".").CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	require.NoError(t, binary.err)
	return binary.path
}
