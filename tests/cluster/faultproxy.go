package main

// `faultproxy`: a TLS reverse proxy in front of the API server that clients under test (the agent)
// talk to, so tests can make the control plane misbehave the ways a real one does under load or
// partition: hung requests, failed requests, dropped watches, watches that expire. Faults are
// armed on a plain-HTTP control port on loopback:
//
//	POST /faults   {"dropWatches": true,                      close every open watch now
//	                "expireNextWatch": N,                      answer N watches with 410 Expired
//	                "failRequests": {"count", "status" (500|429), "pathContains", "verb"},
//	                "holdRequests": {"count", "seconds", "pathContains", "verb", "bodyContains"}}
//	GET /faults    what is armed and not yet used; DELETE /faults disarms everything
//
// Verbs are Kubernetes'  (get, list, watch, create, update, patch, delete); "get" and "list" both
// match any GET that is not a watch.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

type failRule struct {
	Count        int    `json:"count"`
	Status       int    `json:"status,omitempty"`
	PathContains string `json:"pathContains,omitempty"`
	Verb         string `json:"verb,omitempty"`
}

type holdRule struct {
	Count        int     `json:"count,omitempty"`
	Seconds      float64 `json:"seconds"`
	PathContains string  `json:"pathContains,omitempty"`
	Verb         string  `json:"verb,omitempty"`
	BodyContains string  `json:"bodyContains,omitempty"`
}

type faultRequest struct {
	DropWatches     bool            `json:"dropWatches"`
	ExpireNextWatch json.RawMessage `json:"expireNextWatch"`
	FailRequests    *failRule       `json:"failRequests"`
	HoldRequests    *holdRule       `json:"holdRequests"`
}

type armed struct {
	FailRequests      []failRule `json:"failRequests"`
	ExpireNextWatches int        `json:"expireNextWatches"`
	HoldRequests      []holdRule `json:"holdRequests"`
	WatchesOpen       int        `json:"watchesOpen"`
}

type faultProxy struct {
	proxy *httputil.ReverseProxy

	mu      sync.Mutex
	armed   armed
	watches map[int]context.CancelFunc
	nextID  int
}

func runFaultProxy(args []string) error {
	fs := flag.NewFlagSet("faultproxy", flag.ContinueOnError)
	upstream := fs.String("upstream", "", "the API server's URL (https://127.0.0.1:PORT)")
	caFile := fs.String("ca", "", "CA that signed the API server's certificate")
	certFile := fs.String("cert", "", "serving certificate (signed by the same CA)")
	keyFile := fs.String("key", "", "serving key")
	readyFile := fs.String("ready-file", "", "written with the proxy's https URL")
	controlFile := fs.String("control-file", "", "written with the control port's http URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	target, err := url.Parse(*upstream)
	if err != nil || *readyFile == "" || *controlFile == "" {
		return fmt.Errorf("faultproxy: --upstream, --ready-file and --control-file are required")
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return err
	}

	p := &faultProxy{watches: map[int]context.CancelFunc{}}
	p.proxy = httputil.NewSingleHostReverseProxy(target)
	p.proxy.FlushInterval = -1 // watches stream event by event
	p.proxy.Transport = &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 100,
	}
	p.proxy.ErrorLog = nil

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	apiListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	controlListener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	api := &http.Server{Handler: p, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	control := &http.Server{Handler: http.HandlerFunc(p.control)}
	go func() { _ = api.ServeTLS(apiListener, "", "") }()
	go func() { _ = control.Serve(controlListener) }()
	if err := writeAtomically(*controlFile, "http://"+controlListener.Addr().String()+"\n"); err != nil {
		return err
	}
	if err := writeAtomically(*readyFile, "https://"+apiListener.Addr().String()+"\n"); err != nil {
		return err
	}
	<-ctx.Done()
	p.dropWatches()
	_ = control.Close()
	return api.Close()
}

func verbOf(r *http.Request) string {
	switch r.Method {
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	if w := r.URL.Query().Get("watch"); w == "true" || w == "1" {
		return "watch"
	}
	return "get"
}

func verbMatches(rule, verb string) bool {
	rule = strings.ToLower(rule)
	return rule == "" || rule == verb || (verb == "get" && rule == "list")
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	verb := verbOf(r)
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	if hold := p.takeHold(r.URL.Path, verb, body); hold > 0 {
		select {
		case <-time.After(hold):
		case <-r.Context().Done():
			return // the client gave up, as it would with a hung server
		}
	}
	if status := p.takeFailure(r.URL.Path, verb); status != 0 {
		writeStatus(w, status)
		return
	}
	if verb != "watch" {
		p.proxy.ServeHTTP(w, r)
		return
	}
	if p.takeExpiry() {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		fmt.Fprintln(w, `{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version (injected)","reason":"Expired","code":410}}`)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	id := p.openWatch(cancel)
	defer p.closeWatch(id)
	p.proxy.ServeHTTP(w, r.WithContext(ctx))
}

func writeStatus(w http.ResponseWriter, status int) {
	reason, message := "InternalError", "injected fault: internal error"
	if status == http.StatusTooManyRequests {
		reason, message = "TooManyRequests", "injected fault: too many requests"
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":%q,"reason":%q,"code":%d}`, message, reason, status)
}

func (p *faultProxy) takeHold(path, verb string, body []byte) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, rule := range p.armed.HoldRequests {
		if strings.Contains(path, rule.PathContains) && verbMatches(rule.Verb, verb) && bytes.Contains(body, []byte(rule.BodyContains)) {
			p.armed.HoldRequests[i].Count--
			if p.armed.HoldRequests[i].Count <= 0 {
				p.armed.HoldRequests = append(p.armed.HoldRequests[:i], p.armed.HoldRequests[i+1:]...)
			}
			return time.Duration(rule.Seconds * float64(time.Second))
		}
	}
	return 0
}

func (p *faultProxy) takeFailure(path, verb string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, rule := range p.armed.FailRequests {
		if strings.Contains(path, rule.PathContains) && verbMatches(rule.Verb, verb) {
			p.armed.FailRequests[i].Count--
			if p.armed.FailRequests[i].Count <= 0 {
				p.armed.FailRequests = append(p.armed.FailRequests[:i], p.armed.FailRequests[i+1:]...)
			}
			return rule.Status
		}
	}
	return 0
}

func (p *faultProxy) takeExpiry() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.armed.ExpireNextWatches > 0 {
		p.armed.ExpireNextWatches--
		return true
	}
	return false
}

func (p *faultProxy) openWatch(cancel context.CancelFunc) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID++
	p.watches[p.nextID] = cancel
	return p.nextID
}

func (p *faultProxy) closeWatch(id int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cancel, ok := p.watches[id]; ok {
		cancel()
		delete(p.watches, id)
	}
}

func (p *faultProxy) dropWatches() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, cancel := range p.watches {
		cancel()
		delete(p.watches, id)
	}
}

func (p *faultProxy) control(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/faults" {
		http.NotFound(w, r)
		return
	}
	switch r.Method {
	case http.MethodPost:
		var req faultRequest
		decoder := json.NewDecoder(r.Body)
		decoder.DisallowUnknownFields()
		if err := decoder.Decode(&req); err != nil {
			http.Error(w, "invalid fault request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := p.arm(req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	case http.MethodDelete:
		p.mu.Lock()
		p.armed = armed{}
		p.mu.Unlock()
	case http.MethodGet:
	default:
		http.Error(w, "use GET, POST or DELETE", http.StatusMethodNotAllowed)
		return
	}
	p.mu.Lock()
	state := p.armed
	state.WatchesOpen = len(p.watches)
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(state)
}

func (p *faultProxy) arm(req faultRequest) error {
	expire := 0
	if len(req.ExpireNextWatch) > 0 {
		var flag bool
		if err := json.Unmarshal(req.ExpireNextWatch, &flag); err == nil {
			if flag {
				expire = 1
			}
		} else if err := json.Unmarshal(req.ExpireNextWatch, &expire); err != nil {
			return fmt.Errorf("expireNextWatch: a count or true")
		}
	}
	if f := req.FailRequests; f != nil {
		if f.Status == 0 {
			f.Status = http.StatusInternalServerError
		}
		if f.Status != http.StatusInternalServerError && f.Status != http.StatusTooManyRequests {
			return fmt.Errorf("unsupported injected status %d: use 500 or 429", f.Status)
		}
	}
	if h := req.HoldRequests; h != nil {
		if h.Seconds < 0 || h.Seconds > 600 {
			return fmt.Errorf("hold of %v seconds: use a number of seconds from 0 to 600", h.Seconds)
		}
		if h.Count == 0 {
			h.Count = 1
		}
	}
	if req.DropWatches {
		p.dropWatches()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed.ExpireNextWatches += expire
	if f := req.FailRequests; f != nil && f.Count > 0 {
		p.armed.FailRequests = append(p.armed.FailRequests, *f)
	}
	if h := req.HoldRequests; h != nil {
		p.armed.HoldRequests = append(p.armed.HoldRequests, *h)
	}
	return nil
}
