package main

import (
	"io/fs"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDefaultMemoryLimit(t *testing.T) {
	meminfo := "MemTotal:       24576000 kB\nMemFree:         1000 kB\n"
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(name string) ([]byte, error) {
			if s, ok := m[name]; ok {
				return []byte(s), nil
			}
			return nil, fs.ErrNotExist
		}
	}
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  int64
	}{
		{"a cgroup limit", map[string]string{"/sys/fs/cgroup/memory.max": "2147483648\n", "/proc/meminfo": meminfo}, 2147483648 / 10 * 9},
		{"a cgroup without a limit", map[string]string{"/sys/fs/cgroup/memory.max": "max\n", "/proc/meminfo": meminfo}, 24576000 * 1024 / 2},
		{"no cgroup", map[string]string{"/proc/meminfo": meminfo}, 24576000 * 1024 / 2},
		{"nothing readable", nil, 0},
		{"garbage", map[string]string{"/sys/fs/cgroup/memory.max": "-1", "/proc/meminfo": "MemTotal: lots kB"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, why := defaultMemoryLimit(files(tc.files))
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.want == 0, why == "", why)
		})
	}
}
