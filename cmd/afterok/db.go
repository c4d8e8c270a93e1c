package main

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/afterok/afterok/eventstore"
)

// connect opens the pool (creating and migrating the database if needed).
func connect(ctx context.Context, env *environment, app string) (*pgxpool.Pool, error) {
	return connectTraced(ctx, env, app, nil)
}

// connectLongReads is connect for the commands that read the whole store in
// one statement by design (verify): the serving roles' statement timeout
// bounds how long a writer may hold locks, and a read of every event of a
// million-message store takes longer than that. The command's own context
// (Ctrl-C) still ends it.
func connectLongReads(ctx context.Context, env *environment, app string) (*pgxpool.Pool, error) {
	return eventstore.Connect(ctx, env.cfg.DatabaseURL, eventstore.PoolConfig{
		MaxConns:         env.cfg.DBMaxConns,
		StatementTimeout: longReadTimeout,
		IdleInTxTimeout:  env.cfg.IdleInTxTimeout,
		ApplicationName:  "afterok " + app,
	})
}

// longReadTimeout is the statement timeout of connectLongReads: long enough
// for any store one server holds, short enough that a forgotten session ends.
const longReadTimeout = 24 * time.Hour

// connectTraced is connect with a statement tracer (the serving roles
// expose per-statement latency as a metric).
func connectTraced(ctx context.Context, env *environment, app string, tracer pgx.QueryTracer) (*pgxpool.Pool, error) {
	return eventstore.Connect(ctx, env.cfg.DatabaseURL, eventstore.PoolConfig{
		Tracer:           tracer,
		MaxConns:         env.cfg.DBMaxConns,
		StatementTimeout: env.cfg.StatementTimeout,
		IdleInTxTimeout:  env.cfg.IdleInTxTimeout,
		ApplicationName:  "afterok " + app,
	})
}
