package storetest

import "net/url"

// replaceDBName swaps the path (database) of a URL-form connection string.
// Keyword/value strings ("host=… dbname=…") get a dbname appended, which
// libpq and pgx resolve last-wins.
func replaceDBName(raw, name string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return raw + " dbname=" + name
	}
	u.Path = "/" + name
	return u.String()
}
