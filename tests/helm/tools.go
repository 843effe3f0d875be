//go:build tools

// Package helm pins the helm CLI for the chart tests: nothing here is compiled into a program of
// this module; the blank import keeps helm.sh/helm/v4 in go.mod so that, from this directory,
// `go build helm.sh/helm/v4/cmd/helm` builds exactly the pinned version (scripts/install-helm).
package helm

import _ "helm.sh/helm/v4/cmd/helm"
