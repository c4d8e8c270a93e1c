// Package storetest is the one helper integration tests use to get real,
// isolated infrastructure: a freshly created PostgreSQL database per test
// (migrated, dropped afterwards) and a JetStream connection with a subject
// and stream prefix of its own. The services keep state between runs, so
// nothing here reuses a name.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/afterok/afterok/eventstore"
)

// DefaultServerURL is used when neither AFTEROK_TEST_DATABASE_URL nor
// DATABASE_URL is set; the database part is replaced per test.
const DefaultServerURL = "postgres://localhost:5432/postgres?sslmode=disable"

// ServerURL is the PostgreSQL server tests run against.
func ServerURL() string {
	for _, k := range []string{"AFTEROK_TEST_DATABASE_URL", "DATABASE_URL"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return DefaultServerURL
}

// DB is an isolated, migrated database that lives as long as the test.
type DB struct {
	Pool *pgxpool.Pool
	URL  string
	Name string
}

// RandomName returns prefix followed by 12 random hex digits.
func RandomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// NewDB creates a database with a random name, migrates it, and drops it
// when the test ends.
func NewDB(t testing.TB) *DB {
	t.Helper()
	return NewDBWith(t, eventstore.PoolConfig{MaxConns: 12})
}

// NewDBWith is NewDB with a pool configuration.
func NewDBWith(t testing.TB, pc eventstore.PoolConfig) *DB {
	t.Helper()
	return newDBOn(t, ServerURL(), pc)
}

func newDBOn(t testing.TB, server string, pc eventstore.PoolConfig) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base, err := pgx.ParseConfig(server)
	if err != nil {
		t.Fatalf("storetest: database url: %v", err)
	}
	name := RandomName("afterok_test_")
	url := replaceDBName(server, name)
	pool, err := eventstore.Connect(ctx, url, pc)
	if err != nil {
		t.Fatalf("storetest: create database %s on %s (is PostgreSQL running? `make test` starts it): %v", name, base.Host, err)
	}
	t.Cleanup(func() {
		pool.Close()
		dropDatabase(t, base, name)
	})
	return &DB{Pool: pool, URL: url, Name: name}
}

func dropDatabase(t testing.TB, base *pgx.ConnConfig, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin := base.Copy()
	admin.Database = "postgres"
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		t.Errorf("storetest: drop %s: %v", name, err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Errorf("storetest: drop %s: %v", name, err)
	}
}

// FreshDatabase names a database that does not exist yet, for tests of
// creating one: it returns its URL on the test server and drops it (if
// anything created it) when the test ends.
func FreshDatabase(t testing.TB) (url, name string) {
	t.Helper()
	base, err := pgx.ParseConfig(ServerURL())
	if err != nil {
		t.Fatalf("storetest: database url: %v", err)
	}
	name = RandomName("afterok_test_")
	t.Cleanup(func() { dropDatabase(t, base, name) })
	return replaceDBName(ServerURL(), name), name
}
