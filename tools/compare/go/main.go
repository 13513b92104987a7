// Runner for the comparison tool: containerd's remotes/docker (the registry client under
// containerd, nerdctl, BuildKit and oras-go v1), built from Debian's packaged sources.
//
//	containerd-runner [-ingest] < request.json > observation.json
//
// Reads one request (JSON) on stdin and writes one observation (JSON) on stdout; exits 0 even
// when a download failed, 2 for a request aimed off this machine. See tools/compare/run.py and
// tools/compare/runners/_protocol.py for the protocol.
//
// One resolver, docker.NewResolver over docker.ConfigureDefaultRegistries, with a Docker
// authorizer (Basic or the token protocol, credentials as given), serves every download. Each
// download of a blob is Resolver.Fetcher(HOST/REPO) and Fetcher.Fetch of the descriptor a
// manifest would give (digest, the request's size, a blob media type), as containerd fetches
// layers. Not Resolver.Resolve(HOST/REPO@DIGEST), as `ctr content fetch-object` does to learn
// the size: it refuses anything over docker.MaxManifestSize (4 MiB), blobs too. A size of 0
// is taken as the blob being empty: Fetch then returns an empty stream without a request.
// Two ways to take the stream, two columns:
//
//   - default: io.Copy of Fetch's stream into blob-<i>. remotes/docker checks nothing against
//     the digest: that is left to whoever reads the stream.
//   - -ingest: remotes.FetchHandler into a fresh content/local store (one per download, so
//     that a blob already in the store does not skip the fetch), as containerd's own pulls
//     ingest; the store verifies size and digest at commit. The committed blob is hard-linked
//     as blob-<i>.
//
// An image pull resolves the tag and picks the manifest for the platform with
// platforms.Only. With -ingest it is containerd's pull without unpacking: images.Dispatch of
// FetchHandler and LimitManifests(FilterPlatforms(ChildrenHandler)) into a content/local
// store, as Client.Pull does. Without, it is composed of Fetch calls. Either way it is written
// in the `dir:` shape tools/compare/scenarios.py reads (blobs named by their hex, then
// manifest.json). containerd has nothing that writes layers as files named by their titles:
// such a request is reported as unsupported.
//
// Defaults except: an http.Transport without proxies (loopback only), trusting the request's
// CA for an https registry; WithPlainHTTP(MatchAllHosts) for a plain-http one.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/content/local"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/platforms"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/version"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const errorLimit = 300

// Any type but a manifest's sends Fetch to the blobs endpoint.
const blobMediaType = "application/octet-stream"

type credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type request struct {
	Registry    string       `json:"registry"`
	Repository  string       `json:"repository"`
	Digest      string       `json:"digest"`
	Credentials *credentials `json:"credentials"`
	CACert      *string      `json:"ca_cert"`
	OutputDir   string       `json:"output_dir"`
	Downloads   *int         `json:"downloads"`
	Timeout     *float64     `json:"timeout"`
	Tag         *string      `json:"tag"`
	Pull        *string      `json:"pull"`
	Platform    *string      `json:"platform"`
	Size        *int64       `json:"size"`
	// Parts of one blob over several connections: remotes/docker 1.6 has no way to.
	MaxConcurrency *int `json:"max_concurrency"`
}

type result struct {
	OK      bool    `json:"ok"`
	Error   *string `json:"error"`
	Elapsed float64 `json:"elapsed"`
}

type observation struct {
	Client      string   `json:"client"`
	Unsupported *string  `json:"unsupported"`
	Downloads   []result `json:"downloads"`
}

// runner holds the one resolver every download of a request goes through.
type runner struct {
	request  request
	host     string // host:port, as references name it
	resolver remotes.Resolver
	ingest   bool
}

func main() {
	ingest := flag.Bool("ingest", false, "take each blob through a content/local store")
	flag.Parse()
	client := "containerd remotes/docker " + strings.TrimSuffix(version.Version, "+unknown")
	if *ingest {
		client += " (Fetch into a content/local store)"
	} else {
		client += " (Fetch)"
	}
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintf(os.Stderr, "runner: malformed request: %v\n", err)
		os.Exit(2)
	}
	registry, err := checkLoopback(req.Registry)
	if err != nil {
		fmt.Fprintf(os.Stderr, "runner: %v\n", err)
		os.Exit(2)
	}
	if problem := incomplete(req); problem != "" {
		fmt.Fprintf(os.Stderr, "runner: malformed request: %s\n", problem)
		os.Exit(2)
	}
	if req.Pull != nil && *req.Pull == "files" {
		reason := "no pull of files: containerd pulls images into its content store, " +
			"nothing writes layers as files named by their titles"
		emit(observation{Client: client, Unsupported: &reason, Downloads: []result{}})
		return
	}
	if req.MaxConcurrency != nil && *req.MaxConcurrency > 1 {
		reason := "no parallel ranges in one blob: Fetch is one GET (a Range only to resume " +
			"it), no option fetches parts of a blob at once"
		emit(observation{Client: client, Unsupported: &reason, Downloads: []result{}})
		return
	}
	if err := os.MkdirAll(req.OutputDir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "runner: %v\n", err)
		os.Exit(1)
	}
	resolver, err := newResolver(req, registry)
	r := &runner{request: req, host: registry.Host, resolver: resolver, ingest: *ingest}
	emit(observation{Client: client, Downloads: r.observe(err)})
}

func incomplete(req request) string {
	switch {
	case req.Pull == nil && req.Size == nil:
		return "a blob download needs the blob's size"
	case req.Pull != nil && *req.Pull == "image" && (req.Tag == nil || req.Platform == nil):
		return "an image pull needs a tag and a platform"
	}
	return ""
}

func emit(o observation) {
	out, err := json.Marshal(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "runner: %v\n", err)
		os.Exit(1)
	}
	os.Stdout.Write(append(out, '\n'))
	// A download still stuck past its time limit must not hold the process open.
	os.Exit(0)
}

// checkLoopback refuses any registry that is not on this machine: the client must never leave it.
func checkLoopback(registry string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(registry, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("registry must be an http(s) URL, got %q", registry)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("registry host %q is not a loopback address", host)
	}
	return u, nil
}

func newResolver(req request, registry *url.URL) (remotes.Resolver, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.Proxy = nil
	if req.CACert != nil {
		pem, err := os.ReadFile(*req.CACert)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", *req.CACert)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	client := &http.Client{Transport: transport}
	authorizerOptions := []docker.AuthorizerOpt{docker.WithAuthClient(client)}
	if req.Credentials != nil {
		given := *req.Credentials
		authorizerOptions = append(authorizerOptions, docker.WithAuthCreds(
			func(string) (string, string, error) { return given.Username, given.Password, nil },
		))
	}
	registryOptions := []docker.RegistryOpt{
		docker.WithClient(client),
		docker.WithAuthorizer(docker.NewDockerAuthorizer(authorizerOptions...)),
	}
	if registry.Scheme == "http" {
		registryOptions = append(registryOptions, docker.WithPlainHTTP(docker.MatchAllHosts))
	}
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(registryOptions...),
	}), nil
}

// observe runs the downloads one after another, each within the request's timeout; `made` is
// why the resolver could not be made (every download then fails with it).
func (r *runner) observe(made error) []result {
	count := 1
	if r.request.Downloads != nil {
		count = *r.request.Downloads
	}
	limit := 60.0
	if r.request.Timeout != nil {
		limit = *r.request.Timeout
	}
	results := make([]result, 0, count)
	for index := 0; index < count; index++ {
		if made != nil {
			results = append(results, failed(made, 0))
			continue
		}
		started := time.Now()
		done := make(chan error, 1)
		go func(index int) { done <- r.download(index) }(index)
		select {
		case err := <-done:
			elapsed := time.Since(started).Seconds()
			if err != nil {
				results = append(results, failed(err, elapsed))
			} else {
				results = append(results, result{OK: true, Elapsed: round(elapsed)})
			}
		case <-time.After(time.Duration(limit * float64(time.Second))):
			message := fmt.Sprintf("Timeout: the client had not returned after %g s (the "+
				"request's timeout, which the runner applies to each download)", limit)
			results = append(results, result{Error: &message, Elapsed: round(limit)})
			for len(results) < count {
				never := "NotAttempted: an earlier download never returned"
				results = append(results, result{Error: &never})
			}
			return results
		}
	}
	return results
}

func (r *runner) download(index int) error {
	ctx := context.Background()
	if r.request.Pull != nil {
		return r.pull(ctx, filepath.Join(r.request.OutputDir, fmt.Sprintf("pull-%d", index)))
	}
	target := filepath.Join(r.request.OutputDir, fmt.Sprintf("blob-%d", index))
	// As a manifest's layer gives it. The digest is cast, not parsed: what the fetcher does
	// with a malformed one is part of what is observed.
	desc := ocispec.Descriptor{
		MediaType: blobMediaType,
		Digest:    digest.Digest(r.request.Digest),
		Size:      *r.request.Size,
	}
	fetcher, err := r.resolver.Fetcher(ctx, fmt.Sprintf("%s/%s", r.host, r.request.Repository))
	if err != nil {
		return err
	}
	if r.ingest {
		store, root, err := r.newStore(fmt.Sprintf(".store-%d", index))
		if err != nil {
			return err
		}
		if _, err := remotes.FetchHandler(store, fetcher)(ctx, desc); err != nil {
			return err
		}
		return linkInto(blobPath(root, desc.Digest), target)
	}
	return fetchTo(ctx, fetcher, desc, target)
}

// linkInto hard-links the committed blob as target, replacing what is there (another process
// of the same run may have put it there first).
func linkInto(blob, target string) error {
	temporary := fmt.Sprintf("%s.link-%d", target, os.Getpid())
	if err := os.Link(blob, temporary); err != nil {
		return err
	}
	return os.Rename(temporary, target)
}

func (r *runner) newStore(name string) (content.Store, string, error) {
	root := filepath.Join(r.request.OutputDir, name)
	store, err := local.NewStore(root)
	return store, root, err
}

func blobPath(root string, dgst digest.Digest) string {
	return filepath.Join(root, "blobs", dgst.Algorithm().String(), dgst.Encoded())
}

// fetchTo writes Fetch's stream, as it comes, to target.
func fetchTo(ctx context.Context, fetcher remotes.Fetcher, desc ocispec.Descriptor, target string) error {
	stream, err := fetcher.Fetch(ctx, desc)
	if err != nil {
		return err
	}
	defer stream.Close()
	file, err := os.Create(target)
	if err != nil {
		return err
	}
	if _, err := io.Copy(file, stream); err != nil {
		file.Close()
		return err
	}
	return file.Close()
}

func fetchBytes(ctx context.Context, fetcher remotes.Fetcher, desc ocispec.Descriptor) ([]byte, error) {
	stream, err := fetcher.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	return io.ReadAll(stream)
}

func (r *runner) pull(ctx context.Context, folder string) error {
	platform, err := platforms.Parse(*r.request.Platform)
	if err != nil {
		return err
	}
	matcher := platforms.Only(platform)
	name, root, err := r.resolver.Resolve(ctx, fmt.Sprintf("%s/%s:%s", r.host, r.request.Repository, *r.request.Tag))
	if err != nil {
		return err
	}
	fetcher, err := r.resolver.Fetcher(ctx, name)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(folder, 0o755); err != nil {
		return err
	}
	if r.ingest {
		return r.pullIngested(ctx, folder, fetcher, root, matcher)
	}
	manifest, data, err := manifestFor(ctx, fetcher, root, matcher)
	if err != nil {
		return err
	}
	for _, blob := range append([]ocispec.Descriptor{manifest.Config}, manifest.Layers...) {
		if err := fetchTo(ctx, fetcher, blob, filepath.Join(folder, blob.Digest.Encoded())); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(folder, "manifest.json"), data, 0o644)
}

// manifestFor fetches the manifest `root` names for the platform: root itself, or the best
// match among an index's entries (platforms.Only's order).
func manifestFor(ctx context.Context, fetcher remotes.Fetcher, root ocispec.Descriptor, matcher platforms.MatchComparer) (ocispec.Manifest, []byte, error) {
	var manifest ocispec.Manifest
	data, err := fetchBytes(ctx, fetcher, root)
	if err != nil {
		return manifest, nil, err
	}
	if root.MediaType == ocispec.MediaTypeImageIndex || root.MediaType == images.MediaTypeDockerSchema2ManifestList {
		var index ocispec.Index
		if err := json.Unmarshal(data, &index); err != nil {
			return manifest, nil, err
		}
		var best *ocispec.Descriptor
		for i, entry := range index.Manifests {
			if entry.Platform == nil || !matcher.Match(*entry.Platform) {
				continue
			}
			if best == nil || matcher.Less(*entry.Platform, *best.Platform) {
				best = &index.Manifests[i]
			}
		}
		if best == nil {
			return manifest, nil, fmt.Errorf("no manifest for the platform: %w", errdefs.ErrNotFound)
		}
		if data, err = fetchBytes(ctx, fetcher, *best); err != nil {
			return manifest, nil, err
		}
	}
	err = json.Unmarshal(data, &manifest)
	return manifest, data, err
}

// pullIngested is Client.Pull's fetch without the unpack, into a content/local store beside
// the folder, then the platform's manifest and its blobs written into the folder.
func (r *runner) pullIngested(ctx context.Context, folder string, fetcher remotes.Fetcher, root ocispec.Descriptor, matcher platforms.MatchComparer) error {
	store, storeRoot, err := r.newStore("." + filepath.Base(folder) + "-store")
	if err != nil {
		return err
	}
	var lock sync.Mutex
	var manifests []ocispec.Descriptor
	recordManifests := images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if desc.MediaType == ocispec.MediaTypeImageManifest || desc.MediaType == images.MediaTypeDockerSchema2Manifest {
			lock.Lock()
			manifests = append(manifests, desc)
			lock.Unlock()
		}
		return nil, nil
	})
	children := images.LimitManifests(images.FilterPlatforms(images.ChildrenHandler(store), matcher), matcher, 1)
	handler := images.Handlers(remotes.FetchHandler(store, fetcher), recordManifests, children)
	if err := images.Dispatch(ctx, handler, nil, root); err != nil {
		return err
	}
	if len(manifests) != 1 {
		return fmt.Errorf("the pull fetched %d manifests for the platform: %w", len(manifests), errdefs.ErrNotFound)
	}
	data, err := content.ReadBlob(ctx, store, manifests[0])
	if err != nil {
		return err
	}
	var manifest ocispec.Manifest
	if err := json.Unmarshal(data, &manifest); err != nil {
		return err
	}
	for _, blob := range append([]ocispec.Descriptor{manifest.Config}, manifest.Layers...) {
		if err := os.Link(blobPath(storeRoot, blob.Digest), filepath.Join(folder, blob.Digest.Encoded())); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(folder, "manifest.json"), data, 0o644)
}

// The errors containerd wraps its failures around, by the name a Go program tests them with.
var sentinels = []struct {
	name string
	err  error
}{
	{"context.DeadlineExceeded", context.DeadlineExceeded},
	{"io.ErrUnexpectedEOF", io.ErrUnexpectedEOF},
	{"digest.ErrDigestInvalidFormat", digest.ErrDigestInvalidFormat},
	{"digest.ErrDigestInvalidLength", digest.ErrDigestInvalidLength},
	{"digest.ErrDigestUnsupported", digest.ErrDigestUnsupported},
	{"reference.ErrInvalid", reference.ErrInvalid},
	{"docker.ErrInvalidAuthorization", docker.ErrInvalidAuthorization},
	{"errdefs.ErrNotFound", errdefs.ErrNotFound},
	{"errdefs.ErrFailedPrecondition", errdefs.ErrFailedPrecondition},
	{"errdefs.ErrInvalidArgument", errdefs.ErrInvalidArgument},
	{"errdefs.ErrUnavailable", errdefs.ErrUnavailable},
	{"errdefs.ErrAlreadyExists", errdefs.ErrAlreadyExists},
}

// kind names an error as `error_kind` in scenarios.py shows it: the sentinel it wraps, else
// the type of the innermost error that has one of its own (plain fmt/errors texts have none).
func kind(err error) string {
	for _, sentinel := range sentinels {
		if errors.Is(err, sentinel.err) {
			return sentinel.name
		}
	}
	name := "error"
	for cause := err; cause != nil; cause = errors.Unwrap(cause) {
		typeName := strings.TrimPrefix(fmt.Sprintf("%T", cause), "*")
		if typeName != "fmt.wrapError" && typeName != "errors.errorString" {
			name = typeName
		}
	}
	return name
}

func failed(err error, elapsed float64) result {
	message := strings.Join(strings.Fields(kind(err)+": "+err.Error()), " ")
	if len(message) > errorLimit {
		message = message[:errorLimit]
	}
	return result{Error: &message, Elapsed: round(elapsed)}
}

func round(seconds float64) float64 {
	return math.Round(seconds*1e6) / 1e6
}
