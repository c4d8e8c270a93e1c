// Package console serves the support console: a web page for the people
// who answer "what happened to my message?". It is static files embedded
// in the binary (web/), plain HTML, CSS and JavaScript modules with no
// build step, that sign in with an API key and call only the public API
// from the browser, so the console can show nothing the key could not
// read with curl.
//
// It must never fetch anything from outside the server (no CDN, no web
// fonts: the machines that run afterok may have no internet), never read
// the database itself, and never accept the API key: the key stays in the
// browser tab and travels only as the API requests' Bearer header.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"mime"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/afterok/afterok/handlers/edge/api"
)

//go:embed web
var files embed.FS

// Prefix is where the console lives; every path below it that is not an
// asset is one of its pages (deep links such as /console/messages/{id}).
const Prefix = "/console/"

// SecurityPolicy is the Content-Security-Policy of every console answer:
// scripts, styles and connections to this server only, no inline script
// or style, no frames, and no form may submit anywhere (the sign-in form
// is handled by script; without script it goes nowhere rather than put
// the key into a URL).
const SecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type file struct {
	body  []byte
	etag  string
	ctype string
}

// Console is the handler of /console/.
type Console struct {
	index  file
	assets map[string]file // by path below Prefix: "assets/app.js"
	// version names this build's assets: the page asks for
	// assets/<version>/app.js, which a browser may keep for good, so a
	// page load costs only the page and its API calls; a new binary has a
	// new version, so nothing stale is ever used. The modules import each
	// other by relative paths, which carry the version along.
	version string
}

// New loads the embedded files once.
func New() (*Console, error) {
	c := &Console{assets: map[string]file{}}
	var index []byte
	err := fs.WalkDir(files, "web", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(p))
		if strings.HasSuffix(p, ".js") {
			ctype = "text/javascript; charset=utf-8" // modules must be served as JavaScript whatever the OS's mime table says
		}
		f := file{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, ctype: ctype}
		rel := strings.TrimPrefix(p, "web/")
		if rel == "index.html" {
			index = b
		} else {
			c.assets[rel] = f
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if index == nil {
		return nil, errors.New("console: web/index.html is missing")
	}
	all := sha256.New()
	names := slices.Sorted(maps.Keys(c.assets))
	var preload strings.Builder
	for _, name := range names {
		all.Write([]byte(name + "\x00" + c.assets[name].etag))
		if strings.HasSuffix(name, ".js") && name != "assets/app.js" {
			fmt.Fprintf(&preload, "<link rel=\"modulepreload\" href=\"%s%s\">\n", Prefix, name)
		}
	}
	c.version = hex.EncodeToString(all.Sum(nil)[:6])
	// Every module is fetched at once, not as the imports are discovered
	// one level at a time.
	index = bytes.Replace(index, []byte("<!-- modulepreload -->\n"), []byte(preload.String()), 1)
	index = bytes.ReplaceAll(index, []byte(Prefix+"assets/"), []byte(Prefix+"assets/"+c.version+"/"))
	sum := sha256.Sum256(index)
	c.index = file{body: index, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, ctype: "text/html; charset=utf-8"}
	return c, nil
}

// Route mounts the console on the API server.
func (c *Console) Route() api.Route {
	return api.Route{Method: http.MethodGet, Pattern: Prefix, Public: true, Handle: c.serve}
}

// serve answers an asset by its path, and every other path below Prefix
// with the page, whose script reads the path and shows what it names. An
// asset that does not exist is a 404, not the page: a browser that asked
// for a script must not be handed HTML.
func (c *Console) serve(w http.ResponseWriter, r *http.Request, _ *api.RequestContext) error {
	rel := strings.TrimPrefix(r.URL.Path, strings.TrimSuffix(Prefix, "/"))
	rel = strings.TrimPrefix(path.Clean(rel), "/")
	f := c.index
	cache := "no-cache" // revalidated by ETag: a new binary's files are seen at once
	if strings.HasPrefix(rel, "assets/") || path.Ext(rel) != "" {
		// assets/<version>/x.js is assets/x.js of this build; an older
		// build's version gets this build's file, revalidated.
		if v, name, ok := strings.Cut(strings.TrimPrefix(rel, "assets/"), "/"); ok && isVersion(v) {
			rel = "assets/" + name
			if v == c.version {
				cache = "public, max-age=31536000, immutable"
			}
		}
		var ok bool
		if f, ok = c.assets[rel]; !ok {
			return api.NotFound("the console has no file %s", rel)
		}
	}
	h := w.Header()
	h.Set("Content-Security-Policy", SecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", cache)
	h.Set("Content-Type", f.ctype)
	h.Set("ETag", f.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	return nil
}

func isVersion(s string) bool {
	if len(s) != 12 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Version names this build's assets (the path segment after assets/).
func (c *Console) Version() string { return c.version }
