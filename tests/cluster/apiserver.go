package main

// `control-plane`: embedded etcd and the real kube-apiserver in one process, on loopback ports
// the kernel picks (no port is guessed, so sandboxes side by side never collide).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/embed"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/client-go/rest"
	basecompatibility "k8s.io/component-base/compatibility"
	"k8s.io/component-base/featuregate"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
)

func runControlPlane(args []string) error {
	fs := flag.NewFlagSet("control-plane", flag.ContinueOnError)
	dir := fs.String("dir", "", "data directory: etcd/ is created in it; pki/ and tokens.csv must exist")
	readyFile := fs.String("ready-file", "", "written with https://127.0.0.1:PORT once /readyz answers ok")
	verbosity := fs.String("v", "0", "kube-apiserver log verbosity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *readyFile == "" {
		return fmt.Errorf("control-plane: --dir and --ready-file are required")
	}
	ctx := genericapiserver.SetupSignalContext()

	etcdURL, stopEtcd, err := startEtcd(filepath.Join(*dir, "etcd"))
	if err != nil {
		return fmt.Errorf("starting etcd: %w", err)
	}
	defer stopEtcd()

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := listener.Addr().(*net.TCPAddr).Port
	pki := filepath.Join(*dir, "pki")
	flags := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// The kubernetes Service's endpoints would be the loopback address, which EndpointSlice
		// validation refuses: nothing in the sandbox reaches the API server through that Service.
		"--endpoint-reconciler-type=none",
		"--tls-cert-file=" + filepath.Join(pki, "serving.crt"),
		"--tls-private-key-file=" + filepath.Join(pki, "serving.key"),
		"--client-ca-file=" + filepath.Join(pki, "ca.crt"),
		"--token-auth-file=" + filepath.Join(*dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		// Dual-stack, so Services may ask for IPv6 and IPv4 families as on a dual-stack EKS cluster.
		"--service-cluster-ip-range=10.96.0.0/16,fd00:10:96::/108",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(pki, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(pki, "sa.key"),
		"--api-audiences=https://kubernetes.default.svc.cluster.local",
		"--profiling=false",
		"--v=" + *verbosity,
	}
	flags = append(flags, fs.Args()...)

	s := options.NewServerRunOptions()
	featureGate := s.GenericServerRunOptions.ComponentGlobalsRegistry.FeatureGateFor(basecompatibility.DefaultKubeComponent)
	apiFlags := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		apiFlags.AddFlagSet(f)
	}
	if err := apiFlags.Parse(flags); err != nil {
		return err
	}
	if err := s.GenericServerRunOptions.ComponentGlobalsRegistry.Set(); err != nil {
		return err
	}
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	if err := logsapi.ValidateAndApply(s.Logs, featureGate); err != nil {
		return err
	}
	s.SecureServing.Listener = listener
	s.SecureServing.BindPort = port
	completed, err := s.Complete(ctx)
	if err != nil {
		return err
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return errors.NewAggregate(errs)
	}
	featureGate.(featuregate.MutableFeatureGate).AddMetrics()

	serverURL := fmt.Sprintf("https://127.0.0.1:%d", port)
	go announceWhenReady(ctx, serverURL, filepath.Join(pki, "ca.crt"), *readyFile)
	return app.Run(ctx, completed)
}

// startEtcd runs a single-member etcd on kernel-chosen loopback ports and returns its client URL.
func startEtcd(dataDir string) (string, func(), error) {
	cfg := embed.NewConfig()
	cfg.Dir = dataDir
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	// A throwaway test cluster: durability is not worth the fsync latency.
	cfg.UnsafeNoFsync = true
	any := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls = []url.URL{any}
	cfg.AdvertiseClientUrls = []url.URL{any}
	cfg.ListenPeerUrls = []url.URL{any}
	cfg.AdvertisePeerUrls = []url.URL{any}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return "", nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Close()
		return "", nil, fmt.Errorf("etcd was not ready within 60 s")
	}
	return "http://" + e.Clients[0].Addr().String(), e.Close, nil
}

// announceWhenReady writes the server URL to path (atomically) once /readyz answers 200.
func announceWhenReady(ctx context.Context, serverURL, caFile, path string) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		fmt.Fprintf(os.Stderr, "control-plane: reading %s: %v\n", caFile, err)
		return
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	for ctx.Err() == nil {
		resp, err := client.Get(serverURL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if err := writeAtomically(path, serverURL+"\n"); err != nil {
					fmt.Fprintf(os.Stderr, "control-plane: %v\n", err)
				}
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeAtomically(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
