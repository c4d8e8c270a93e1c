package main

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/afterok/afterok/eventstore"
)

// connect opens the pool (creating and migrating the database if needed).
func connect(ctx context.Context, env *environment, app string) (*pgxpool.Pool, error) {
	return connectTraced(ctx, env, app, nil)
}

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
