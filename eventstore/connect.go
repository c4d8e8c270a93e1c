package eventstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/afterok/afterok/schema"
)

// PoolConfig sizes and bounds a connection pool.
type PoolConfig struct {
	// MaxConns defaults to 16: pgxpool's own default (max(4, cores)) is
	// sized for nothing in particular, and one afterok process runs several
	// roles that each hold a connection while they work.
	MaxConns int32
	// StatementTimeout bounds one statement (a 100,000-message COPY takes a
	// few seconds; the default is 60 s).
	StatementTimeout time.Duration
	// IdleInTxTimeout bounds how long a transaction may sit idle. An open
	// writing transaction holds back every tail reader (see tailSQL), so a
	// stuck writer must not hold it for long. Default 15 s.
	IdleInTxTimeout time.Duration
	// ApplicationName shows up in pg_stat_activity.
	ApplicationName string
	// Tracer, if set, observes every statement (see QueryMetrics).
	Tracer pgx.QueryTracer
}

func (c PoolConfig) withDefaults() PoolConfig {
	if c.MaxConns <= 0 {
		c.MaxConns = 16
	}
	if c.StatementTimeout <= 0 {
		c.StatementTimeout = 60 * time.Second
	}
	if c.IdleInTxTimeout <= 0 {
		c.IdleInTxTimeout = 15 * time.Second
	}
	if c.ApplicationName == "" {
		c.ApplicationName = "afterok"
	}
	return c
}

// Connect opens a pool on databaseURL, creating the database first if it
// does not exist, and applies the migrations.
func Connect(ctx context.Context, databaseURL string, pc PoolConfig) (*pgxpool.Pool, error) {
	pc = pc.withDefaults()
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	if err := EnsureDatabase(ctx, cfg.ConnConfig); err != nil {
		return nil, err
	}
	cfg.MaxConns = pc.MaxConns
	if pc.Tracer != nil {
		cfg.ConnConfig.Tracer = pc.Tracer
	}
	rp := cfg.ConnConfig.RuntimeParams
	rp["statement_timeout"] = strconv.FormatInt(pc.StatementTimeout.Milliseconds(), 10)
	rp["idle_in_transaction_session_timeout"] = strconv.FormatInt(pc.IdleInTxTimeout.Milliseconds(), 10)
	rp["application_name"] = pc.ApplicationName
	// Every query here is short and index-driven; a parallel plan (which
	// generic plans for "= ANY($1)" invite once the events table is large)
	// only adds worker start-up and shutdown to each call.
	rp["max_parallel_workers_per_gather"] = "0"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// EnsureDatabase creates the database named in cfg when it does not exist,
// connecting to the server's "postgres" database to do so.
func EnsureDatabase(ctx context.Context, cfg *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		return conn.Close(ctx)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "3D000" { // invalid_catalog_name
		return fmt.Errorf("connect to %s: %w", cfg.Database, err)
	}
	admin := cfg.Copy()
	admin.Database = "postgres"
	aconn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("connect to create database %s: %w", cfg.Database, err)
	}
	defer aconn.Close(ctx)
	_, err = aconn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{cfg.Database}.Sanitize())
	if err != nil && !createdByAnother(err) {
		return fmt.Errorf("create database %s: %w", cfg.Database, err)
	}
	return nil
}

// createdByAnother reports that CREATE DATABASE failed because a racing
// process created the same database: duplicate_database when the other
// had committed before ours began, unique_violation on pg_database's name
// index when both were inserting at once (ours waited for the other's
// commit). Either way the database now exists, which is all we wanted.
func createdByAnother(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return pe.Code == "42P04" || (pe.Code == "23505" && (pe.ConstraintName == "" || pe.ConstraintName == "pg_database_datname_index"))
}

const migrationLockKey = 7_301_202_611 // arbitrary, constant: serialises concurrent migrators

// Migrate applies every migration not yet recorded, each in its own
// transaction, under an advisory lock so that several processes starting
// at once apply each migration once. Re-running it is a no-op. A recorded
// migration whose file changed since is an error: migrations are append-only.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	migs, err := schema.Migrations()
	if err != nil {
		return err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLockKey); err != nil {
		return fmt.Errorf("migration lock: %w", err)
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLockKey)
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrations table: %w", err)
	}
	applied := map[int]string{}
	rows, err := conn.Query(ctx, `SELECT version, checksum FROM schema_migrations`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var v int
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			rows.Close()
			return err
		}
		applied[v] = sum
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, m := range migs {
		if sum, ok := applied[m.Version]; ok {
			switch {
			case sum == m.Checksum:
			case slices.Contains(m.Earlier, sum):
				// Recorded the way checksums were taken before: the same
				// statements. Recorded again the way they are taken now.
				if _, err := conn.Exec(ctx, `UPDATE schema_migrations SET checksum = $2 WHERE version = $1`,
					m.Version, m.Checksum); err != nil {
					return fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
				}
			default:
				return fmt.Errorf("migration %04d_%s was changed after it was applied (checksum %s, file %s)",
					m.Version, m.Name, sum[:12], m.Checksum[:12])
			}
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)`,
				m.Version, m.Name, m.Checksum)
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %04d_%s: %w", m.Version, m.Name, err)
		}
	}
	return nil
}
