// Package deploy owns the checks of surge's deployment artifacts: the
// Dockerfile (../Dockerfile), the Kubernetes manifests (kubernetes/, a
// kustomize base and the local and production overlays) and the Prometheus
// rules (prometheus/). It is a module of its own, so that the Kubernetes
// and Prometheus libraries the tests use stay out of the main module; its
// tests (`make test-deploy`) render the overlays, decode every object
// strictly into the Kubernetes API types, evaluate the alert rules and
// compare the names they use with what the main module's source defines.
package deploy
