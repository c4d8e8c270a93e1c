package main

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/afterok/afterok/eventstore"
)

// connect opens the pool (creating and migrating the database if needed).
func connect(ctx context.Context, env *environment, app string) (*pgxpool.Pool, error) {
	return eventstore.Connect(ctx, env.cfg.DatabaseURL, eventstore.PoolConfig{
		MaxConns:         env.cfg.DBMaxConns,
		StatementTimeout: env.cfg.StatementTimeout,
		IdleInTxTimeout:  env.cfg.IdleInTxTimeout,
		ApplicationName:  "afterok " + app,
	})
}
