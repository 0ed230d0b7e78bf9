package deploy

import (
	"bufio"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// The seed's probe timings: /health every 10 s, restarted after 3
// failures; /ready every 5 s, out of traffic after 2.
const (
	livenessPath    = "/health"
	livenessPeriod  = 10
	livenessFails   = 3
	readinessPath   = "/ready"
	readinessPeriod = 5
	readinessFails  = 2
)

// manifests is one rendered overlay, decoded into the API types.
type manifests struct {
	deployments map[string]*appsv1.Deployment
	jobs        map[string]*batchv1.Job
	services    map[string]*corev1.Service
	hpas        map[string]*autoscalingv2.HorizontalPodAutoscaler
	pdbs        map[string]*policyv1.PodDisruptionBudget
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	namespaces  map[string]*corev1.Namespace
	pvcs        map[string]*corev1.PersistentVolumeClaim
}

// render builds an overlay with kustomize (krusty, as `kubectl kustomize`)
// from an in-memory copy of kubernetes/ in which the gitignored secrets.env
// of the overlay is made from secrets.env.example (plus extra keys), and
// decodes every object strictly: an unknown or duplicate field fails.
func render(t *testing.T, overlay string, extraSecrets map[string]string) *manifests {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir("kubernetes", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile("/"+filepath.ToSlash(p), b)
	})
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{}
	for _, k := range secretExampleKeys(t) {
		secrets[k] = "test-value-of-" + strings.ToLower(k)
	}
	for k, v := range extraSecrets {
		secrets[k] = v
	}
	var env strings.Builder
	for k, v := range secrets {
		fmt.Fprintf(&env, "%s=%s\n", k, v)
	}
	dir := path.Join("/kubernetes/overlays", overlay)
	if err := mem.WriteFile(path.Join(dir, "secrets.env"), []byte(env.String())); err != nil {
		t.Fatal(err)
	}
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", overlay, err)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, autoscalingv2.AddToScheme, batchv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	dec := json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme, json.SerializerOptions{Yaml: true, Strict: true})
	m := &manifests{
		deployments: map[string]*appsv1.Deployment{}, jobs: map[string]*batchv1.Job{}, services: map[string]*corev1.Service{},
		hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}, namespaces: map[string]*corev1.Namespace{},
		pvcs: map[string]*corev1.PersistentVolumeClaim{},
	}
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, gvk, err := dec.Decode(y, nil, nil)
		if err != nil {
			t.Errorf("%s %s: strict decode: %v", r.GetKind(), r.GetName(), err)
			continue
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			m.deployments[o.Name] = o
		case *batchv1.Job:
			m.jobs[o.Name] = o
		case *corev1.Service:
			m.services[o.Name] = o
		case *autoscalingv2.HorizontalPodAutoscaler:
			m.hpas[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			m.pdbs[o.Name] = o
		case *corev1.ConfigMap:
			m.configMaps[o.Name] = o
		case *corev1.Secret:
			m.secrets[o.Name] = o
		case *corev1.Namespace:
			m.namespaces[o.Name] = o
		case *corev1.PersistentVolumeClaim:
			m.pvcs[o.Name] = o
		default:
			t.Errorf("%s %s: a kind this test does not check", gvk, r.GetName())
		}
	}
	return m
}

// secretExampleKeys reads the keys of kubernetes/overlays/secrets.env.example
// and checks that it holds no value.
func secretExampleKeys(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("kubernetes/overlays/secrets.env.example")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var keys []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || v != "" {
			t.Errorf("secrets.env.example: %q: want KEY= with no value (no secret values in the repository)", line)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// pods are the pod templates of the Deployments and Jobs, by kind/name.
func (m *manifests) pods() map[string]*corev1.PodTemplateSpec {
	out := map[string]*corev1.PodTemplateSpec{}
	for n, d := range m.deployments {
		out["Deployment/"+n] = &d.Spec.Template
	}
	for n, j := range m.jobs {
		out["Job/"+n] = &j.Spec.Template
	}
	return out
}

func TestOverlays(t *testing.T) {
	for _, tc := range []struct {
		overlay          string
		namespace        string
		extraSecrets     map[string]string
		minAPI, maxAPI   int32
		consumers        int32
		imageTagRequired bool // pinned, neither dev nor latest
	}{
		{overlay: "local", namespace: "surge-local", minAPI: 1, maxAPI: 2, consumers: 1},
		{overlay: "production", namespace: "surge", minAPI: 5, maxAPI: 50, consumers: 3, imageTagRequired: true,
			extraSecrets: map[string]string{"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "key"}},
	} {
		t.Run(tc.overlay, func(t *testing.T) {
			m := render(t, tc.overlay, tc.extraSecrets)
			src := mustSource(t)

			api, consumer := m.deployments["surge-api"], m.deployments["surge-consumer"]
			if api == nil || consumer == nil || m.jobs["surge-migrate"] == nil {
				t.Fatalf("want Deployments surge-api and surge-consumer and Job surge-migrate, have %v %v", keys(m.deployments), keys(m.jobs))
			}
			if ns := m.namespaces[tc.namespace]; ns == nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
				t.Errorf("namespace %s with pod-security.kubernetes.io/enforce=restricted missing", tc.namespace)
			}

			t.Run("probes", func(t *testing.T) {
				for _, d := range []*appsv1.Deployment{api, consumer} {
					c := d.Spec.Template.Spec.Containers[0]
					checkProbe(t, d.Name+" liveness", c, c.LivenessProbe, livenessPath, livenessPeriod, livenessFails)
					checkProbe(t, d.Name+" readiness", c, c.ReadinessProbe, readinessPath, readinessPeriod, readinessFails)
					// The startup probe holds liveness back while the process
					// starts, on the same endpoint.
					if s := c.StartupProbe; s == nil || s.PeriodSeconds*s.FailureThreshold < 60 {
						t.Errorf("%s: want a startup probe that allows a minute or more", d.Name)
					} else {
						checkProbe(t, d.Name+" startup", c, s, livenessPath, s.PeriodSeconds, s.FailureThreshold)
					}
					if r := c.ReadinessProbe; r != nil && r.TimeoutSeconds <= 2 {
						t.Errorf("%s: readiness timeout %d s: the /ready checks themselves take up to 2 s", d.Name, r.TimeoutSeconds)
					}
				}
			})

			t.Run("listen", func(t *testing.T) {
				// The binds default to loopback: each container listens on
				// all addresses, on its declared port.
				for _, d := range []*appsv1.Deployment{api, consumer} {
					c := d.Spec.Template.Spec.Containers[0]
					addr := envFrom(t, m, c, "LISTEN_ADDR")
					host, port, err := net.SplitHostPort(addr)
					if err != nil || host != "0.0.0.0" {
						t.Errorf("%s: LISTEN_ADDR %q, want 0.0.0.0:<port>", d.Name, addr)
						continue
					}
					if len(c.Ports) != 1 || strconv.Itoa(int(c.Ports[0].ContainerPort)) != port {
						t.Errorf("%s: ports %v, want the one LISTEN_ADDR binds (%s)", d.Name, c.Ports, port)
					}
					if d.Spec.Template.Annotations["prometheus.io/port"] != port {
						t.Errorf("%s: prometheus.io/port %q, want %s (/metrics is on the listener)", d.Name, d.Spec.Template.Annotations["prometheus.io/port"], port)
					}
				}
				if !hasArg(api.Spec.Template.Spec.Containers[0], "--consumers=false") {
					t.Errorf("surge-api args %v: want --consumers=false (surge-consumer runs them)", api.Spec.Template.Spec.Containers[0].Args)
				}
			})

			t.Run("scaling", func(t *testing.T) {
				h := m.hpas["surge-api"]
				if h == nil {
					t.Fatal("HPA surge-api missing")
				}
				if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != api.Name {
					t.Errorf("HPA targets %s/%s, want Deployment/%s", h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name, api.Name)
				}
				if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas != tc.minAPI || h.Spec.MaxReplicas != tc.maxAPI {
					t.Errorf("HPA %d..%d, want %d..%d", ptrValue(h.Spec.MinReplicas), h.Spec.MaxReplicas, tc.minAPI, tc.maxAPI)
				}
				if api.Spec.Replicas != nil {
					t.Errorf("surge-api sets replicas %d: the HPA owns the count (an apply would reset it)", *api.Spec.Replicas)
				}
				var cpu, rps bool
				for _, mt := range h.Spec.Metrics {
					switch {
					case mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource.Name == corev1.ResourceCPU:
						cpu = mt.Resource.Target.AverageUtilization != nil
					case mt.Type == autoscalingv2.PodsMetricSourceType:
						rps = mt.Pods.Metric.Name == adapterMetric(t) && mt.Pods.Target.AverageValue != nil
					}
				}
				if !cpu || !rps {
					t.Errorf("HPA metrics: CPU utilisation %v, pods metric %s %v; want both", cpu, adapterMetric(t), rps)
				}
				if consumer.Spec.Replicas == nil || *consumer.Spec.Replicas != tc.consumers {
					t.Errorf("surge-consumer replicas %d, want %d", ptrValue(consumer.Spec.Replicas), tc.consumers)
				}
				if p, err := strconv.Atoi(envFrom(t, m, consumer.Spec.Template.Spec.Containers[0], "KAFKA_PARTITIONS")); err != nil || int32(p) < tc.consumers {
					t.Errorf("KAFKA_PARTITIONS %d (%v) below the %d consumers: some would sit idle", p, err, tc.consumers)
				}
			})

			t.Run("disruption", func(t *testing.T) {
				for _, d := range []*appsv1.Deployment{api, consumer} {
					p := m.pdbs[d.Name]
					if p == nil {
						t.Errorf("no PodDisruptionBudget %s", d.Name)
						continue
					}
					sel, err := metaSelector(p.Spec.Selector.MatchLabels)
					if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
						t.Errorf("PDB %s selects %v, not the pods of %s (%v)", p.Name, p.Spec.Selector.MatchLabels, d.Name, d.Spec.Template.Labels)
					}
					if p.Spec.MaxUnavailable == nil || p.Spec.MinAvailable != nil {
						t.Errorf("PDB %s: want maxUnavailable only", p.Name)
						continue
					}
					// At the fewest replicas, a drain may still evict one pod
					// and never all of them.
					n := int(tc.minAPI)
					if d == consumer {
						n = int(tc.consumers)
					}
					u, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MaxUnavailable, n, true)
					if err != nil || u < 1 || (u >= n && n > 1) {
						t.Errorf("PDB %s: maxUnavailable %s of %d pods = %d (%v)", p.Name, p.Spec.MaxUnavailable.String(), n, u, err)
					}
				}
				s := m.services["surge-api"]
				if s == nil {
					t.Fatal("Service surge-api missing")
				}
				sel, _ := metaSelector(s.Spec.Selector)
				if !sel.Matches(labels.Set(api.Spec.Template.Labels)) || sel.Matches(labels.Set(consumer.Spec.Template.Labels)) {
					t.Errorf("Service selector %v: want the API pods only", s.Spec.Selector)
				}
				for _, sp := range s.Spec.Ports {
					if sp.TargetPort.String() != api.Spec.Template.Spec.Containers[0].Ports[0].Name {
						t.Errorf("Service port %s targets %s, not the API's port", sp.Name, sp.TargetPort.String())
					}
				}
			})

			t.Run("pods", func(t *testing.T) {
				image := ""
				for name, p := range m.pods() {
					checkPod(t, name, p, m)
					for _, c := range p.Spec.Containers {
						if image == "" {
							image = c.Image
						}
						if c.Image != image {
							t.Errorf("%s/%s runs %s, others %s: one image", name, c.Name, c.Image, image)
						}
					}
				}
				if _, tag, _ := strings.Cut(image, ":"); tc.imageTagRequired && (tag == "" || tag == "dev" || tag == "latest") {
					t.Errorf("image %s: want a pinned tag", image)
				}
			})

			t.Run("env", func(t *testing.T) {
				// Every setting the manifests give is one the binary reads.
				for name, cm := range m.configMaps {
					for k := range cm.Data {
						if !src.env[k] {
							t.Errorf("ConfigMap %s: %s is no environment variable cmd/surge reads", name, k)
						}
					}
				}
				for name, s := range m.secrets {
					for k := range s.Data {
						if !src.env[k] {
							t.Errorf("Secret %s: %s is no environment variable cmd/surge reads", name, k)
						}
					}
				}
				for name, p := range m.pods() {
					for _, c := range p.Spec.Containers {
						for _, e := range c.Env {
							if !src.env[e.Name] {
								t.Errorf("%s/%s: env %s is no environment variable cmd/surge reads", name, c.Name, e.Name)
							}
						}
					}
				}
				// USER_HASH_KEY reaches the API (it refuses to start without).
				if envFrom(t, m, api.Spec.Template.Spec.Containers[0], "USER_HASH_KEY") == "" {
					t.Error("surge-api: USER_HASH_KEY not set")
				}
				// The API writes its audit spool and model cache on volumes
				// (the root file system is read-only).
				c := api.Spec.Template.Spec.Containers[0]
				for _, k := range []string{"AUDIT_SPOOL_DIR", "MODEL_DIR"} {
					dir := envFrom(t, m, c, k)
					if !mounted(c, dir) {
						t.Errorf("surge-api: %s=%s is on no volume", k, dir)
					}
				}
			})
		})
	}
}

// checkProbe checks an HTTP probe's path, period, failures and port.
func checkProbe(t *testing.T, what string, c corev1.Container, p *corev1.Probe, path string, period, failures int32) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: no HTTP probe", what)
		return
	}
	if p.HTTPGet.Path != path || p.PeriodSeconds != period || p.FailureThreshold != failures {
		t.Errorf("%s: %s every %d s, %d failures; want %s every %d s, %d failures", what, p.HTTPGet.Path, p.PeriodSeconds, p.FailureThreshold, path, period, failures)
	}
	if p.TimeoutSeconds < 1 || p.TimeoutSeconds >= p.PeriodSeconds {
		t.Errorf("%s: timeout %d s with period %d s", what, p.TimeoutSeconds, p.PeriodSeconds)
	}
	if !namesPort(c, p.HTTPGet.Port) {
		t.Errorf("%s: port %s is not a port of %s", what, p.HTTPGet.Port.String(), c.Name)
	}
}

// checkPod checks what every pod must have: a non-root user and a
// restricted security context, resource requests, volumes that are mounted
// and have one source, references to objects that exist.
func checkPod(t *testing.T, name string, p *corev1.PodTemplateSpec, m *manifests) {
	t.Helper()
	ps := p.Spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 ||
		ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext %+v: want runAsNonRoot, a non-zero runAsUser, seccomp RuntimeDefault", name, ps)
	} else if uid := dockerfileUser(t); *ps.RunAsUser != uid {
		t.Errorf("%s: runAsUser %d, the image's USER is %d", name, *ps.RunAsUser, uid)
	}
	if p.Spec.AutomountServiceAccountToken == nil || *p.Spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken not false (surge does not call the Kubernetes API)", name)
	}
	volumes := map[string]bool{}
	for _, v := range p.Spec.Volumes {
		volumes[v.Name] = false
		if n := sources(v.VolumeSource); n != 1 {
			t.Errorf("%s: volume %s has %d sources", name, v.Name, n)
		}
		if c := v.PersistentVolumeClaim; c != nil && m.pvcs[c.ClaimName] == nil {
			t.Errorf("%s: volume %s claims %s, which is not in the overlay", name, v.Name, c.ClaimName)
		}
	}
	for _, c := range p.Spec.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s/%s: securityContext %+v: want no privilege escalation, a read-only root, all capabilities dropped", name, c.Name, sc)
		}
		r := c.Resources
		if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
			t.Errorf("%s/%s: resources %v: want CPU and memory requests and a memory limit", name, c.Name, r)
		} else if r.Limits.Memory().Cmp(*r.Requests.Memory()) < 0 {
			t.Errorf("%s/%s: memory limit below the request", name, c.Name)
		}
		for _, vm := range c.VolumeMounts {
			if _, ok := volumes[vm.Name]; !ok {
				t.Errorf("%s/%s: mounts unknown volume %s", name, c.Name, vm.Name)
			}
			volumes[vm.Name] = true
		}
		for _, ef := range c.EnvFrom {
			switch {
			case ef.ConfigMapRef != nil && m.configMaps[ef.ConfigMapRef.Name] == nil:
				t.Errorf("%s/%s: ConfigMap %s not in the overlay", name, c.Name, ef.ConfigMapRef.Name)
			case ef.SecretRef != nil && m.secrets[ef.SecretRef.Name] == nil:
				t.Errorf("%s/%s: Secret %s not in the overlay", name, c.Name, ef.SecretRef.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				continue
			}
			ref := e.ValueFrom.SecretKeyRef
			if s := m.secrets[ref.Name]; s == nil {
				t.Errorf("%s/%s: env %s from Secret %s, not in the overlay", name, c.Name, e.Name, ref.Name)
			} else if _, ok := s.Data[ref.Key]; !ok {
				t.Errorf("%s/%s: env %s from key %s, not in Secret %s", name, c.Name, e.Name, ref.Key, ref.Name)
			}
		}
	}
	for v, used := range volumes {
		if !used {
			t.Errorf("%s: volume %s mounted nowhere", name, v)
		}
	}
}

// envFrom is the value a container gets for an environment variable: its
// env (a value or a Secret key) over its envFrom ConfigMaps and Secrets.
func envFrom(t *testing.T, m *manifests, c corev1.Container, name string) string {
	t.Helper()
	for _, e := range c.Env {
		if e.Name != name {
			continue
		}
		if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil && m.secrets[r.SecretKeyRef.Name] != nil {
			return string(m.secrets[r.SecretKeyRef.Name].Data[r.SecretKeyRef.Key])
		}
		return e.Value
	}
	v := ""
	for _, ef := range c.EnvFrom { // later sources win, as in the kubelet
		switch {
		case ef.ConfigMapRef != nil && m.configMaps[ef.ConfigMapRef.Name] != nil:
			if x, ok := m.configMaps[ef.ConfigMapRef.Name].Data[name]; ok {
				v = x
			}
		case ef.SecretRef != nil && m.secrets[ef.SecretRef.Name] != nil:
			if x, ok := m.secrets[ef.SecretRef.Name].Data[name]; ok {
				v = string(x)
			}
		}
	}
	return v
}

func hasArg(c corev1.Container, arg string) bool {
	for _, a := range c.Args {
		if a == arg {
			return true
		}
	}
	return false
}

func mounted(c corev1.Container, dir string) bool {
	for _, vm := range c.VolumeMounts {
		if dir != "" && (dir == vm.MountPath || strings.HasPrefix(dir, vm.MountPath+"/")) {
			return true
		}
	}
	return false
}

func namesPort(c corev1.Container, port intstr.IntOrString) bool {
	for _, p := range c.Ports {
		if (port.Type == intstr.String && port.StrVal == p.Name) || (port.Type == intstr.Int && port.IntVal == p.ContainerPort) {
			return true
		}
	}
	return false
}

// sources counts the volume sources set (exactly one is valid).
func sources(v corev1.VolumeSource) int {
	n := 0
	rv := reflect.ValueOf(v)
	for i := range rv.NumField() {
		if !rv.Field(i).IsNil() {
			n++
		}
	}
	return n
}

func metaSelector(m map[string]string) (labels.Selector, error) {
	if len(m) == 0 {
		return nil, fmt.Errorf("empty selector")
	}
	return labels.SelectorFromSet(m), nil
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// ptrValue is *p, or 0 for nil (for messages).
func ptrValue(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}
