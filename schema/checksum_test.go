package schema_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/schema"
)

// TestChecksumCoversStatementsNotComments: a comment edited, added or
// removed, and blank lines or trailing spaces, leave a migration's
// checksum alone; any change to a statement changes it.
func TestChecksumCoversStatementsNotComments(t *testing.T) {
	base := schema.Checksum("-- a table\nCREATE TABLE t (id int);\n\nCREATE INDEX t_id ON t (id);\n")
	for _, same := range []string{
		"-- a table, better described\nCREATE TABLE t (id int);\n\nCREATE INDEX t_id ON t (id);\n",
		"CREATE TABLE t (id int);\nCREATE INDEX t_id ON t (id);",
		"  -- indented comment\nCREATE TABLE t (id int);   \n\n\n-- more\nCREATE INDEX t_id ON t (id);\n",
	} {
		require.Equal(t, base, schema.Checksum(same), "%q", same)
	}
	for _, changed := range []string{
		"-- a table\nCREATE TABLE t (id bigint);\n\nCREATE INDEX t_id ON t (id);\n",
		"-- a table\nCREATE TABLE t (id int);\n",
		"-- a table\nCREATE INDEX t_id ON t (id);\nCREATE TABLE t (id int);\n",
		"-- a table\n  CREATE TABLE t (id int);\n\nCREATE INDEX t_id ON t (id);\n", // indentation is kept
	} {
		require.NotEqual(t, base, schema.Checksum(changed), "%q", changed)
	}
}

// TestEveryMigrationKnowsItsEarlierChecksum: each migration also accepts
// its whole file's checksum (how databases recorded it before), and the
// migration whose comment was edited since also accepts its old file's.
func TestEveryMigrationKnowsItsEarlierChecksum(t *testing.T) {
	migs, err := schema.Migrations()
	require.NoError(t, err)
	for _, m := range migs {
		require.NotEmpty(t, m.Earlier, m.Name)
		require.NotContains(t, m.Earlier, m.Checksum, m.Name)
		if m.Version == 21 {
			require.Contains(t, m.Earlier, "8bea75f121cc7d865c54cb7180f5acf21660b6ac389dea6b360554ab788e5190")
		}
	}
}
