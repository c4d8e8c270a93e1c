package main

import (
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

// Config is afterok's configuration, loaded once from the environment. The
// defaults make `afterok dev` work on a laptop with PostgreSQL on
// localhost; README.md documents every field.
type Config struct {
	DatabaseURL string     // DATABASE_URL
	DBMaxConns  int32      // AFTEROK_DB_MAX_CONNS
	LogLevel    slog.Level // AFTEROK_LOG_LEVEL: debug, info, warn, error
	// StatementTimeout and IdleInTxTimeout bound how long a writer can hold
	// back the event tail (AFTEROK_STATEMENT_TIMEOUT, AFTEROK_IDLE_IN_TX_TIMEOUT).
	StatementTimeout time.Duration
	IdleInTxTimeout  time.Duration
}

// LoadConfig reads the configuration through getenv.
func LoadConfig(getenv func(string) string) (Config, error) {
	c := Config{
		DatabaseURL:      "postgres://localhost:5432/afterok?sslmode=disable",
		DBMaxConns:       24,
		LogLevel:         slog.LevelInfo,
		StatementTimeout: 60 * time.Second,
		IdleInTxTimeout:  15 * time.Second,
	}
	var errs []error
	str := func(key string, dst *string) {
		if v := getenv(key); v != "" {
			*dst = v
		}
	}
	dur := func(key string, dst *time.Duration) {
		if v := getenv(key); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				errs = append(errs, fmt.Errorf("%s=%q: want a duration like 15s", key, v))
				return
			}
			*dst = d
		}
	}
	str("DATABASE_URL", &c.DatabaseURL)
	if v := getenv("AFTEROK_DB_MAX_CONNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 || n > 1000 {
			errs = append(errs, fmt.Errorf("AFTEROK_DB_MAX_CONNS=%q: want a number from 2 to 1000", v))
		} else {
			c.DBMaxConns = int32(n)
		}
	}
	if v := getenv("AFTEROK_LOG_LEVEL"); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			errs = append(errs, fmt.Errorf("AFTEROK_LOG_LEVEL=%q: want debug, info, warn or error", v))
		}
	}
	dur("AFTEROK_STATEMENT_TIMEOUT", &c.StatementTimeout)
	dur("AFTEROK_IDLE_IN_TX_TIMEOUT", &c.IdleInTxTimeout)
	if len(errs) > 0 {
		return c, fmt.Errorf("configuration: %v", errs)
	}
	return c, nil
}
