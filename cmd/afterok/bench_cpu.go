package main

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The CPU split of a bench run: how much CPU afterok, the simulator and
// PostgreSQL each used while it ran, read from /proc (Linux) for the
// processes listening on their ports on this machine. It answers "where
// does the time go" without a profiler, and says when the simulator shares
// afterok's process (then its CPU is inside afterok's figure).

// clockTicks is USER_HZ, 100 on every Linux platform Go runs on.
const clockTicks = 100

// cpuWatch is one process (and, for PostgreSQL, its backends) to measure.
type cpuWatch struct {
	name     string
	pid      int
	children bool // add the CPU of its children, live and exited
	start    float64
}

// cpuSplit measures the listed processes between begin and end.
type cpuSplit struct {
	watches   []*cpuWatch
	notes     []string
	machine0  float64 // busy CPU seconds of the whole machine
	machineOK bool
}

// CPUShare is one process's CPU over a run, in seconds and in cores.
type CPUShare struct {
	Name    string  `json:"name"`
	PID     int     `json:"pid"`
	Seconds float64 `json:"cpu_seconds"`
	Cores   float64 `json:"cores"` // seconds of CPU per second of the run
}

// newCPUSplit finds afterok by the API's port, the simulator by its port
// and PostgreSQL by the database URL's port; a process it cannot find (not
// on this machine, not Linux) is left out with a note.
func newCPUSplit(apiURL, simURL, databaseURL string) *cpuSplit {
	c := &cpuSplit{}
	api := c.add("afterok", hostPort(apiURL, "80"), false)
	if sim := hostPort(simURL, "80"); sim != "" {
		if pid := listenerPID(sim); pid != 0 && api != nil && pid == api.pid {
			c.notes = append(c.notes, "the simulator runs inside the afterok process (its CPU is in afterok's)")
		} else {
			c.add("simulator", sim, false)
		}
	}
	c.add("postgres", hostPort(databaseURL, "5432"), true)
	c.machine0, c.machineOK = machineBusy()
	return c
}

func (c *cpuSplit) add(name, port string, children bool) *cpuWatch {
	if port == "" {
		return nil
	}
	pid := listenerPID(port)
	if pid == 0 {
		c.notes = append(c.notes, fmt.Sprintf("%s: no process listening on port %s here", name, port))
		return nil
	}
	w := &cpuWatch{name: name, pid: pid, children: children}
	w.start, _ = processCPU(pid, children)
	c.watches = append(c.watches, w)
	return w
}

// shares returns each process's CPU since newCPUSplit, and the rest of the
// machine's busy CPU (other processes: the bench itself, anything else).
func (c *cpuSplit) shares(seconds float64) []CPUShare {
	var out []CPUShare
	total := 0.0
	for _, w := range c.watches {
		now, ok := processCPU(w.pid, w.children)
		if !ok {
			continue
		}
		d := now - w.start
		total += d
		out = append(out, CPUShare{Name: w.name, PID: w.pid, Seconds: d, Cores: d / seconds})
	}
	if busy, ok := machineBusy(); ok && c.machineOK && len(out) > 0 {
		d := max(0, busy-c.machine0-total)
		out = append(out, CPUShare{Name: "everything else on the machine", Seconds: d, Cores: d / seconds})
	}
	return out
}

// hostPort is the port of a URL (postgres://… or http://…), "" if it has none.
func hostPort(raw, def string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	if _, p, err := net.SplitHostPort(u.Host); err == nil {
		return p
	}
	return def
}

// listenerPID is the process listening on a TCP port on this machine, 0 if
// none is found (or /proc cannot tell).
func listenerPID(port string) int {
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0
	}
	hexPort := fmt.Sprintf(":%04X", n)
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 9 && fields[3] == "0A" && strings.HasSuffix(fields[1], hexPort) {
				inodes["socket:["+fields[9]+"]"] = true
			}
		}
		fh.Close()
	}
	if len(inodes) == 0 {
		return 0
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		fds, _ := filepath.Glob(p + "/fd/*")
		for _, fd := range fds {
			if link, err := os.Readlink(fd); err == nil && inodes[link] {
				pid, _ := strconv.Atoi(filepath.Base(p))
				return pid
			}
		}
	}
	return 0
}

// procStat returns the fields of /proc/<pid>/stat after the command name
// (index 0 is the state, field 3 of proc(5)).
func procStat(pid int) ([]string, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, false
	}
	return strings.Fields(s[i+1:]), true
}

func ticks(f []string, i int) float64 {
	v, _ := strconv.ParseFloat(f[i], 64)
	return v / clockTicks
}

// processCPU is a process's user+system CPU seconds; with children, also
// those of its exited children (cutime, cstime) and its live ones.
func processCPU(pid int, children bool) (float64, bool) {
	f, ok := procStat(pid)
	if !ok || len(f) < 15 {
		return 0, false
	}
	// proc(5) fields 14–17 (utime, stime, cutime, cstime) are 11–14 here.
	cpu := ticks(f, 11) + ticks(f, 12)
	if !children {
		return cpu, true
	}
	cpu += ticks(f, 13) + ticks(f, 14)
	procs, _ := filepath.Glob("/proc/[0-9]*")
	parent := strconv.Itoa(pid)
	for _, p := range procs {
		child, err := strconv.Atoi(filepath.Base(p))
		if err != nil || child == pid {
			continue
		}
		if cf, ok := procStat(child); ok && len(cf) > 12 && cf[1] == parent {
			cpu += ticks(cf, 11) + ticks(cf, 12)
		}
	}
	return cpu, true
}

// machineBusy is the CPU seconds every core of the machine spent not idle.
func machineBusy() (float64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, false
	}
	busy := 0.0
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 7 { // steal and guest (already in user) are not ours
			break
		}
		x, _ := strconv.ParseFloat(v, 64)
		busy += x
	}
	return busy / clockTicks, true
}
