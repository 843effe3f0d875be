// tgb-cluster: the sandbox's Kubernetes, built from the Kubernetes and etcd Go modules (see
// README.md). One binary, one process per role:
//
//	tgb-cluster pki --dir D                 key material for a new sandbox
//	tgb-cluster control-plane --dir D ...   embedded etcd + the real kube-apiserver
//	tgb-cluster controllers --dir D ...     the real kube-controller-manager
//	tgb-cluster kubelet ...                 pods without containers: scheduling, IPs, readiness
//	tgb-cluster faultproxy ...              a TLS proxy in front of the API server that injects faults
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	run := map[string]func([]string) error{
		"pki":           runPKI,
		"control-plane": runControlPlane,
		"controllers":   runControllers,
		"kubelet":       runKubelet,
		"faultproxy":    runFaultProxy,
	}[os.Args[1]]
	if run == nil {
		usage()
	}
	if err := run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "tgb-cluster %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: tgb-cluster pki|control-plane|controllers|kubelet|faultproxy [flags]")
	os.Exit(2)
}
