package main

// `controllers`: the real kube-controller-manager, with the controllers whose behaviour the agent
// lives with: EndpointSlices from Pods and Services, Deployments and ReplicaSets (rollouts), the
// garbage collector (owned slices and pods go with their owner), namespace deletion, the
// ServiceAccount controllers and PodDisruptionBudget status. Node lifecycle is left out: the
// simulated kubelet owns its Nodes' conditions, and tests set theirs by hand.

import (
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

var sandboxControllers = []string{
	"endpointslice-controller",
	"endpointslice-mirroring-controller",
	"deployment-controller",
	"replicaset-controller",
	"garbage-collector-controller",
	"namespace-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"disruption-controller",
	"root-ca-certificate-publisher-controller",
}

func runControllers(args []string) error {
	fs := flag.NewFlagSet("controllers", flag.ContinueOnError)
	dir := fs.String("dir", "", "sandbox directory: pki/ must exist")
	kubeconfig := fs.String("kubeconfig", "", "how to reach the API server (default: DIR/controllers.kubeconfig)")
	verbosity := fs.String("v", "0", "kube-controller-manager log verbosity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("controllers: --dir is required")
	}
	pki := filepath.Join(*dir, "pki")
	if *kubeconfig == "" {
		*kubeconfig = filepath.Join(*dir, "controllers.kubeconfig")
	}
	cmd := app.NewControllerManagerCommand()
	cmd.SetArgs(append([]string{
		"--kubeconfig=" + *kubeconfig,
		"--controllers=" + strings.Join(sandboxControllers, ","),
		"--leader-elect=false",
		"--secure-port=0",
		"--service-account-private-key-file=" + filepath.Join(pki, "sa.key"),
		"--root-ca-file=" + filepath.Join(pki, "ca.crt"),
		"--use-service-account-credentials=false",
		"--v=" + *verbosity,
	}, fs.Args()...))
	return cmd.Execute()
}
