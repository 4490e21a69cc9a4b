// vcsim for multistore's tests: govmomi's vCenter simulator behind a server of
// our own. Debian's golang-github-vmware-govmomi-dev (0.24.2) ships the
// simulator package but not the vcsim command, so this is the command; it
// builds offline in GOPATH mode (scripts/deps/vmware.sh).
//
// It differs from upstream's vcsim in what the tests need:
//
//   - TLS only, with the certificate given (-tlscert/-tlskey): the built-in one
//     is RSA-1024, which OpenSSL 3 refuses.
//   - -wsdl DIR serves DIR's *.wsdl and *.xsd files at /sdk/NAME, so an
//     unmodified oslo.vmware (which loads /sdk/vimService.wsdl) works.
//   - A PUT on /folder whose body was not stored whole is answered 500 once
//     the body is read to its end (the datastore's file system is full) or
//     400 (the client went away), not 200; the partial file stays, as vcsim
//     leaves it. -stock-put keeps vcsim's own answer: 200, the file
//     silently truncated.
//   - -datastore NAME=PATH adds a datastore at a directory of our choice (a
//     small tmpfs makes one that fills up); the model's own (-ds, at least
//     one when there are VMs) live in fresh directories in $TMPDIR.
//   - -idle-timeout expires idle sessions, as vCenter does.
//   - -refresh keeps the datastores' free space current.
//
// SIGTERM or SIGINT stops it and removes the datastores' $TMPDIR directories.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
)

type datastoreFlag []string

func (d *datastoreFlag) String() string { return strings.Join(*d, ",") }

func (d *datastoreFlag) Set(v string) error {
	if name, dir, ok := strings.Cut(v, "="); !ok || name == "" || dir == "" {
		return errors.New("want NAME=PATH")
	}
	*d = append(*d, v)
	return nil
}

func main() {
	listen := flag.String("l", "127.0.0.1:8989", "address to listen on")
	cert := flag.String("tlscert", "", "PEM certificate file (required)")
	key := flag.String("tlskey", "", "PEM key file (required)")
	username := flag.String("username", "", "the only user name accepted (default: any non-empty)")
	password := flag.String("password", "", "the only password accepted (with -username)")
	dc := flag.Int("dc", 1, "number of datacenters (DC0, DC1, ...)")
	ds := flag.Int("ds", 1, "number of datastores per datacenter (LocalDS_0, ...), in $TMPDIR")
	vm := flag.Int("vm", 2, "number of virtual machines per resource pool")
	wsdl := flag.String("wsdl", "", "serve this directory's *.wsdl and *.xsd files at /sdk/NAME")
	idle := flag.Duration("idle-timeout", 0, "expire sessions idle for this long (0: never)")
	stockPut := flag.Bool("stock-put", false, "answer every /folder PUT 200, as vcsim does")
	refresh := flag.Duration("refresh", 0, "measure the datastores' free space this often (0: at start only)")
	var extra datastoreFlag
	flag.Var(&extra, "datastore", "NAME=PATH: one more datastore on every host, at directory PATH\n"+
		"(\"{dc}\" in PATH: the datacenter's name; repeatable)")
	flag.Parse()
	// A recursive property traversal with VMs in the inventory recurses
	// without end in vcsim 0.24.2 (VM.resourcePool -> pool.vm -> ...) until
	// the stack limit: 1 GB by default, 20 s and 1 GB of memory on a 2-core
	// machine. It crashes all the same, but at 64 MB, at once.
	debug.SetMaxStack(64 << 20)
	if *cert == "" || *key == "" {
		log.Fatal("-tlscert and -tlskey are required")
	}
	certificate, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatal(err)
	}

	model := simulator.VPX()
	model.Datacenter = *dc
	model.Datastore = *ds
	model.Machine = *vm
	simulator.SessionIdleTimeout = *idle
	if err := model.Create(); err != nil {
		log.Fatal(err)
	}
	defer model.Remove()
	if err := addDatastores(model.Service, extra); err != nil {
		model.Remove()
		log.Fatal(err)
	}

	// The simulator registers its handlers while it starts a server of its
	// own; that one only ever listens on a loopback port nobody is told of,
	// and is closed at once: ours serves the same handlers, wrapped.
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{certificate}}
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0"}
	if *username != "" {
		model.Service.Listen.User = url.UserPassword(*username, *password)
	}
	model.Service.NewServer().Close()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		model.Remove()
		log.Fatal(err)
	}
	advertise(ln.Addr().String())
	if *refresh > 0 {
		go refreshDatastores(*refresh)
	}
	server := &http.Server{
		Handler:   &handler{mux: model.Service.ServeMux, wsdl: *wsdl, stockPut: *stockPut},
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{certificate}},
		// HTTP/1.1 only, as vCenter's /folder and /sdk speak it.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
	done := make(chan os.Signal, 1)
	signal.Notify(done, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-done
		_ = server.Close()
	}()
	fmt.Printf("vcsim listening on https://%s/sdk (pid %d)\n", ln.Addr(), os.Getpid())
	if err := server.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
		log.Print(err)
	}
}

// addDatastores creates each NAME=PATH datastore on every host of every
// datacenter, as the model does for its own: CreateLocalDatastore on each
// host's datastore system, through an in-process client. "{dc}" in PATH
// stands for the datacenter's name; the directory is made if missing.
func addDatastores(service *simulator.Service, specs []string) error {
	ctx := context.Background()
	client, err := vim25.NewClient(ctx, service)
	if err != nil {
		return err
	}
	finder := find.NewFinder(client, false)
	dcs, err := finder.DatacenterList(ctx, "*")
	if err != nil {
		return err
	}
	for _, dc := range dcs {
		finder.SetDatacenter(dc)
		hosts, err := finder.HostSystemList(ctx, "*")
		if err != nil {
			return err
		}
		for _, spec := range specs {
			name, dir, _ := strings.Cut(spec, "=")
			dir, err := filepath.Abs(strings.ReplaceAll(dir, "{dc}", dc.Name()))
			if err == nil {
				err = os.MkdirAll(dir, 0o700)
			}
			for _, host := range hosts {
				if err != nil {
					break
				}
				var dss *object.HostDatastoreSystem
				if dss, err = host.ConfigManager().DatastoreSystem(ctx); err == nil {
					_, err = dss.CreateLocalDatastore(ctx, name, dir)
				}
			}
			if err != nil {
				return fmt.Errorf("datastore %s at %s: %w", name, dir, err)
			}
		}
	}
	return nil
}

// refreshDatastores keeps summary.freeSpace current, as vCenter does now and
// then: vcsim measures it once, and its RefreshDatastore method, which
// measures again, answers a fault (its response cannot be encoded in 0.24.2).
func refreshDatastores(every time.Duration) {
	for range time.Tick(every) {
		for _, entity := range simulator.Map.All("Datastore") {
			ds := entity.(*simulator.Datastore)
			simulator.Map.WithLock(ds, func() { _ = ds.RefreshDatastore(nil) })
		}
	}
}

// advertise points the URLs the simulator hands out at our listener.
func advertise(hostport string) {
	simulator.Map.SessionManager().ServiceHostName = hostport
	for _, s := range simulator.Map.OptionManager().Setting {
		if v := s.GetOptionValue(); v.Key == "vcsim.server.url" {
			v.Value = "https://" + hostport + "/sdk"
		}
	}
}

type handler struct {
	mux      *http.ServeMux
	wsdl     string
	stockPut bool
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case h.wsdl != "" && r.Method == http.MethodGet && path.Dir(p) == "/sdk" &&
		(strings.HasSuffix(p, ".wsdl") || strings.HasSuffix(p, ".xsd")):
		http.ServeFile(w, r, filepath.Join(h.wsdl, path.Base(p)))
	case r.Method == http.MethodPut && strings.HasPrefix(p, "/folder/") && !h.stockPut:
		h.put(w, r)
	default:
		h.mux.ServeHTTP(w, r)
	}
}

// put lets vcsim store the body, then answers by what happened to it: vcsim
// copies the body into the file and ignores the copy's error. It reads until
// EOF, so a body never read to its end means a write failed.
func (h *handler) put(w http.ResponseWriter, r *http.Request) {
	body := &watchedBody{ReadCloser: r.Body}
	r.Body = body
	rec := &statusRecorder{ResponseWriter: w}
	h.mux.ServeHTTP(rec, r)
	switch {
	case rec.status != 0: // vcsim's own answer: 404 (no datastore), 500 (cannot create)
		w.WriteHeader(rec.status)
	case body.err != nil:
		log.Printf("PUT %s: reading the body: %s", r.URL.Path, body.err)
		w.WriteHeader(http.StatusBadRequest)
	case !body.eof:
		// Read the rest, so that the client, still sending, gets the answer
		// rather than a connection closed under it.
		_, _ = io.Copy(io.Discard, body)
		log.Printf("PUT %s: the body was not stored whole (file system full?)", r.URL.Path)
		http.Error(w, "the file could not be written whole", http.StatusInternalServerError)
	default:
		w.WriteHeader(http.StatusOK)
	}
}

// watchedBody records how reading ended. A read that returns data together
// with EOF is split in two, so EOF is seen only once every byte before it
// was handed over (and written).
type watchedBody struct {
	io.ReadCloser
	pendingEOF, eof bool
	err             error
}

func (b *watchedBody) Read(buf []byte) (int, error) {
	if b.pendingEOF {
		b.eof = true
		return 0, io.EOF
	}
	n, err := b.ReadCloser.Read(buf)
	switch {
	case errors.Is(err, io.EOF) && n > 0:
		b.pendingEOF = true
		err = nil
	case errors.Is(err, io.EOF):
		b.eof = true
	case err != nil:
		b.err = err
	}
	return n, err
}

// statusRecorder keeps the status vcsim sets instead of sending it: vcsim
// writes no body with it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) { s.status = code }

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return len(b), nil
}
