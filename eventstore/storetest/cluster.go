package storetest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"

	"github.com/afterok/afterok/eventstore"
)

// Cluster is a throwaway PostgreSQL server that the test owns: outage tests
// stop and start it, which they must never do to the machine's shared
// server. It lives in a temporary directory, listens on a free port of
// 127.0.0.1, and is stopped and removed when the test ends.
type Cluster struct {
	// URL is a server URL (database "postgres") for NewDBOn.
	URL  string
	Port int
	bin  string
	dir  string
}

// NewCluster initialises and starts a cluster. It fails the test (never
// skips it) when the PostgreSQL binaries are missing: CI installs them, and
// an outage test that silently does not run proves nothing.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	bin, err := postgresBin()
	if err != nil {
		t.Fatalf("storetest: %v (install PostgreSQL's server package; .ci/services.sh does)", err)
	}
	// Not t.TempDir(): its parents are private to root, and the server runs
	// as the postgres user because initdb refuses to run as root.
	dir, err := os.MkdirTemp("", "afterok-pg-")
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("storetest: %v", err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatalf("storetest: %v", err)
	}
	if err := chownToPostgres(dir, data); err != nil {
		t.Fatalf("storetest: %v", err)
	}
	c := &Cluster{Port: freePort(t), bin: bin, dir: dir}
	c.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)
	if out, err := c.command("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("storetest: initdb: %v\n%s", err, out)
	}
	c.Start(t)
	t.Cleanup(func() { _ = c.command("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop").Run() })
	return c
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", c.Port, c.dir)
	if out, err := c.command("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-o", opts,
		"-l", filepath.Join(c.dir, "server.log"), "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
		t.Fatalf("storetest: start PostgreSQL: %v\n%s\n%s", err, out, log)
	}
}

// Stop shuts the server down the way an operator or a failover does: every
// session is ended and new connections are refused until Start.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if out, err := c.command("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "fast", "-w", "-t", "60", "stop").CombinedOutput(); err != nil {
		t.Fatalf("storetest: stop PostgreSQL: %v\n%s", err, out)
	}
}

// NewDB creates a migrated database of its own on the cluster.
func (c *Cluster) NewDB(t testing.TB, pc eventstore.PoolConfig) *DB {
	t.Helper()
	return newDBOn(t, c.URL, pc)
}

// command runs a PostgreSQL binary, as the postgres user when the test runs
// as root.
func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	path := filepath.Join(c.bin, name)
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	}
	return exec.Command(path, args...)
}

// postgresBin finds the newest installed server's binaries.
func postgresBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no initdb on PATH or under /usr/lib/postgresql/*/bin")
}

func version(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func chownToPostgres(paths ...string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("running as root needs a postgres user for initdb: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, p := range paths {
		if err := os.Chown(p, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("storetest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
