package main

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// defaultMemoryLimit is the soft memory limit afterok sets for itself when
// GOMEMLIMIT is not set, and where it comes from. afterok runs with GOGC=200
// (fewer collections for more memory), so its heap may grow to three times
// what is live before a collection: under a container's limit that is an
// out-of-memory kill waiting for a burst. The soft limit only makes the
// collector work harder near it: 90% of the cgroup's memory.max when the
// process has one, else half of the machine's memory (PostgreSQL usually
// shares it). 0 when neither can be read: no limit, as Go's default.
func defaultMemoryLimit(readFile func(string) ([]byte, error)) (int64, string) {
	if b, err := readFile("/sys/fs/cgroup/memory.max"); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 {
			return n / 10 * 9, "90% of the cgroup's memory.max"
		}
	}
	if b, err := readFile("/proc/meminfo"); err == nil {
		s := bufio.NewScanner(bytes.NewReader(b))
		for s.Scan() {
			f := strings.Fields(s.Text())
			if len(f) >= 3 && f[0] == "MemTotal:" && f[2] == "kB" {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil && kb > 0 {
					return kb * 1024 / 2, "half of the machine's memory"
				}
			}
		}
	}
	return 0, ""
}
