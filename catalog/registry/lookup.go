package registry

import (
	"context"
	"errors"
	"net"
	"strings"

	"github.com/ollama-ecs/ollama-ecs/catalog"
)

// NewClient is the client for a registry host (empty: DefaultHost) that caches sized models in cacheDir (none when
// empty) and speaks plain HTTP to a registry on loopback (one run locally), HTTPS to any other.
func NewClient(host, cacheDir string) *Client {
	c := &Client{Host: host, PlainHTTP: Loopback}
	if cacheDir != "" {
		c.Cache = DirCache{Dir: cacheDir}
	}
	return c
}

// Loopback reports a host:port on the loopback interface.
func Loopback(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Lookup finds a model by name: a catalog entry first (curated, and known offline), then any reference its
// registry has, sized from the model layer's header. source is where a task gets it (ollama://NAME). A name neither
// knows is a catalog.UnknownModelError naming the registry; a registry that cannot be reached, or a model that
// cannot be deployed, is the registry's error.
func Lookup(ctx context.Context, cat *catalog.Catalog, c *Client, name string) (m catalog.Model, source string, err error) {
	m, err = cat.Model(name)
	if err == nil {
		return m, "ollama://" + m.Name, nil
	}
	var unknown *catalog.UnknownModelError
	if !errors.As(err, &unknown) || c == nil {
		return m, "", err
	}
	if _, perr := Parse(name, c.host()); perr != nil {
		// Not a reference at all (the seed's "Llama2 7B" spelling of an unknown model, say): the catalog's answer.
		return m, "", err
	}
	res, rerr := c.Resolve(ctx, strings.TrimSpace(name))
	var nf *NotFoundError
	if errors.As(rerr, &nf) {
		unknown.Registry = nf.Ref.Host
		return m, "", unknown
	}
	if rerr != nil {
		return m, "", rerr
	}
	return res.Model, "ollama://" + res.Model.Name, nil
}
