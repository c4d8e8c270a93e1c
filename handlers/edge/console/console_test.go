package console_test

import (
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/edge/console"
)

func server(t *testing.T) (*httptest.Server, *console.Console) {
	t.Helper()
	c, err := console.New()
	require.NoError(t, err)
	s, err := api.New(api.Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Extra: []api.Route{c.Route()}}, api.Config{})
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv, c
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	res, err := http.Get(url)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, string(b)
}

// TestDeepLinksServeThePage: every address support pastes into a ticket
// answers the page, under the strict policy, and never with a redirect
// that could lose the query.
func TestDeepLinksServeThePage(t *testing.T) {
	srv, _ := server(t)
	for _, p := range []string{"/console/", "/console/messages?to=%2B4915112345678&state=failed&order_id=01ARZ3NDEKTSV4RRFFQ69G5FAV",
		"/console/messages/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/console/orders/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/console/account",
		"/console/webhooks/wh_1", "/console/providers"} {
		res, body := get(t, srv.URL+p)
		require.Equal(t, 200, res.StatusCode, p)
		require.Equal(t, "text/html; charset=utf-8", res.Header.Get("Content-Type"), p)
		require.Equal(t, console.SecurityPolicy, res.Header.Get("Content-Security-Policy"), p)
		require.Equal(t, "nosniff", res.Header.Get("X-Content-Type-Options"))
		require.Contains(t, body, `<input id="api_key" name="api_key" type="password"`, p)
	}
	res, _ := get(t, srv.URL+"/console")
	require.Equal(t, 200, res.StatusCode, "/console is redirected to /console/ and answered")
	require.Equal(t, "/console/", res.Request.URL.Path)
}

// TestThePolicyAllowsOnlyThisServer: the CSP names no other origin and no
// inline code, and the page holds none a policy would have to allow.
func TestThePolicyAllowsOnlyThisServer(t *testing.T) {
	for _, dir := range strings.Split(console.SecurityPolicy, ";") {
		fields := strings.Fields(dir)
		for _, src := range fields[1:] {
			require.Contains(t, []string{"'self'", "'none'", "data:"}, src, "directive %s", dir)
		}
	}
	require.Contains(t, console.SecurityPolicy, "default-src 'self'")
	srv, _ := server(t)
	_, page := get(t, srv.URL+"/console/")
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAllString(page, -1) {
		require.Contains(t, tag, `src="/console/assets/`, "an inline script would need 'unsafe-inline'")
	}
	require.NotContains(t, page, "<style")
	require.NotRegexp(t, `\sstyle=`, page)
	require.NotRegexp(t, `\son[a-z]+=`, page, "an inline event handler would need 'unsafe-inline'")
}

// TestAssetsAreVersionedAndComplete: every file the page names answers
// with its type and may be cached for good; every module a module imports
// exists (a typo there is a blank page in the browser); nothing points
// outside the server.
func TestAssetsAreVersionedAndComplete(t *testing.T) {
	srv, c := server(t)
	_, page := get(t, srv.URL+"/console/messages")
	refs := regexp.MustCompile(`(?:src|href)="(/console/assets/[^"]+)"`).FindAllStringSubmatch(page, -1)
	require.GreaterOrEqual(t, len(refs), 3, "the script, the style and the icon at least")
	preloads := 0
	for _, r := range refs {
		require.Contains(t, r[1], "/console/assets/"+c.Version()+"/", "an asset the page names carries the build's version")
		res, _ := get(t, srv.URL+r[1])
		require.Equal(t, 200, res.StatusCode, r[1])
		require.Equal(t, "public, max-age=31536000, immutable", res.Header.Get("Cache-Control"), r[1])
		if strings.HasSuffix(r[1], ".js") {
			require.Equal(t, "text/javascript; charset=utf-8", res.Header.Get("Content-Type"))
			preloads++
		}
	}
	web := os.DirFS("web")
	var modules []string
	require.NoError(t, fs.WalkDir(web, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".js") {
			modules = append(modules, p)
		}
		return err
	}))
	require.Equal(t, len(modules), preloads, "every module is preloaded or is the entry")
	imports := regexp.MustCompile(`(?m)^import [^'"]*['"]([^'"]+)['"]`)
	external := regexp.MustCompile(`(?:from[ \t]+|import\([ \t]*|fetch\([ \t]*|url\([ \t]*)['"]?(?:https?:)?//`)
	for _, m := range modules {
		src, err := fs.ReadFile(web, m)
		require.NoError(t, err)
		require.NotRegexp(t, external, string(src), "%s reaches outside the server", m)
		for _, imp := range imports.FindAllStringSubmatch(string(src), -1) {
			target := path.Join(path.Dir(m), imp[1])
			_, err := fs.Stat(web, target)
			require.NoError(t, err, "%s imports %s, which does not exist", m, imp[1])
			res, _ := get(t, srv.URL+"/console/"+target)
			require.Equal(t, 200, res.StatusCode, target)
		}
	}
	css, err := fs.ReadFile(web, "assets/console.css")
	require.NoError(t, err)
	require.NotRegexp(t, external, string(css))
	require.NotContains(t, string(css), "@font-face", "no web fonts: the system's fonts only")
}

// TestAMissingAssetIsAProblem: a script that does not exist is a 404
// problem document, never the page (a browser would try to run HTML).
func TestAMissingAssetIsAProblem(t *testing.T) {
	srv, c := server(t)
	for _, p := range []string{"/console/assets/nope.js", "/console/assets/" + c.Version() + "/nope.js", "/console/favicon.ico"} {
		res, body := get(t, srv.URL+p)
		require.Equal(t, 404, res.StatusCode, p)
		require.Equal(t, "application/problem+json", res.Header.Get("Content-Type"), p)
		var doc struct{ Code string }
		require.NoError(t, json.Unmarshal([]byte(body), &doc))
		require.Equal(t, "not_found", doc.Code)
	}
	// An older build's page still gets this build's files, revalidated.
	res, _ := get(t, srv.URL+"/console/assets/000000000000/app.js")
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "no-cache", res.Header.Get("Cache-Control"))
}
