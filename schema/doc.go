// Package schema holds afterok's SQL migrations, embedded in the binary.
//
// Migrations are numbered files (NNNN_name.sql) applied in order, each in
// its own transaction, and recorded in schema_migrations with a checksum so
// that an edited, already-applied migration is refused instead of silently
// diverging. The checksum covers the statements, not the comments: a
// comment may be corrected after a migration has run. The runner lives in
// eventstore (it needs a database driver); this package only owns the SQL
// and its order.
package schema

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var files embed.FS

// Migration is one numbered SQL file.
type Migration struct {
	Version  int
	Name     string
	SQL      string
	Checksum string // of the statements (Checksum)
	// Earlier are checksums that databases recorded for these same
	// statements before the checksum left comments out: the whole file's,
	// as it is and, for a file whose comments were edited since, as it was.
	Earlier []string
}

// earlier are the whole-file checksums of migrations whose comments were
// edited after databases recorded them (the statements are unchanged).
var earlier = map[int]string{
	// Its first line named a design document outside the project.
	21: "8bea75f121cc7d865c54cb7180f5acf21660b6ac389dea6b360554ab788e5190",
}

// Checksum is a migration's checksum: of its lines without comment-only
// and blank lines and without trailing spaces, so that editing a comment
// leaves it alone and changing a statement does not.
func Checksum(sql string) string {
	h := sha256.New()
	for line := range strings.Lines(sql) {
		line = strings.TrimRight(line, " \t\r\n")
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		h.Write([]byte(line))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Migrations returns every migration in version order.
func Migrations() ([]Migration, error) {
	entries, err := fs.ReadDir(files, "migrations")
	if err != nil {
		return nil, err
	}
	var out []Migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		num, rest, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %q: name must be NNNN_description.sql", name)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %q and %q share version %d", prev, name, v)
		}
		seen[v] = name
		b, err := fs.ReadFile(files, "migrations/"+name)
		if err != nil {
			return nil, err
		}
		whole := sha256.Sum256(b)
		m := Migration{Version: v, Name: rest, SQL: string(b), Checksum: Checksum(string(b)),
			Earlier: []string{hex.EncodeToString(whole[:])}}
		if e, ok := earlier[v]; ok {
			m.Earlier = append(m.Earlier, e)
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}
