// Command validate checks rendered Kubernetes manifests (helm template's output) offline, against the API types of
// the pinned k8s.io/api: every document is decoded strictly into its typed object (an unknown or misspelt field, a
// wrong type or an unknown kind is an error), names and labels are checked as the API server checks them, and the
// references between the chart's objects are followed (a Service, PodDisruptionBudget or HorizontalPodAutoscaler
// that selects or targets nothing, a volume naming a ConfigMap that is not rendered, a probe on a port the
// container does not declare). The operators' custom resources (Strimzi, CloudNativePG) have no Go types here:
// they are allowed by apiVersion and kind only, and checked for a name and a spec.
//
//	helm template ... | validate [-external-secret NAME ...]
//
// Exit status 0 and one line per object when everything holds; 1 and one line per problem otherwise.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// The built-in kinds the chart may render, each with its typed object.
var builtIn = map[string]func() any{
	"apps/v1/Deployment":                     func() any { return &appsv1.Deployment{} },
	"batch/v1/Job":                           func() any { return &batchv1.Job{} },
	"batch/v1/CronJob":                       func() any { return &batchv1.CronJob{} },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"policy/v1/PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
	"v1/Service":                             func() any { return &corev1.Service{} },
	"v1/ConfigMap":                           func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                              func() any { return &corev1.Secret{} },
	"v1/PersistentVolumeClaim":               func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/ServiceAccount":                      func() any { return &corev1.ServiceAccount{} },
	"networking.k8s.io/v1/NetworkPolicy":     func() any { return &networkingv1.NetworkPolicy{} },
	"networking.k8s.io/v1/Ingress":           func() any { return &networkingv1.Ingress{} },
}

// The operators' custom resources the chart may render (no Go types: allowed by kind, checked loosely).
var customResources = map[string]bool{
	"kafka.strimzi.io/v1beta2/Kafka":         true,
	"kafka.strimzi.io/v1beta2/KafkaNodePool": true,
	"postgresql.cnpg.io/v1/Cluster":          true,
}

type header struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
}

type object struct {
	key   string // apiVersion/kind
	name  string
	typed any
	raw   map[string]any
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	var external, claims stringList
	flag.Var(&external, "external-secret", "a Secret the chart expects to exist already (repeatable)")
	flag.Var(&claims, "external-claim", "a PersistentVolumeClaim the chart expects to exist already (repeatable)")
	flag.Parse()
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "validate: reading stdin:", err)
		os.Exit(2)
	}
	objects, problems := decodeAll(input)
	problems = append(problems, crossCheck(objects, external, claims)...)
	if len(objects) == 0 {
		problems = append(problems, "no objects in the input")
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Println("INVALID", p)
		}
		os.Exit(1)
	}
	for _, o := range objects {
		fmt.Println("ok", o.key, o.name)
	}
}

// splitDocuments splits a YAML stream on its "---" separator lines.
func splitDocuments(input []byte) [][]byte {
	var docs [][]byte
	var current bytes.Buffer
	scanner := bufio.NewScanner(bytes.NewReader(input))
	scanner.Buffer(make([]byte, 1<<20), 1<<26)
	for scanner.Scan() {
		line := scanner.Text()
		if strings.TrimRight(line, " ") == "---" {
			docs = append(docs, append([]byte(nil), current.Bytes()...))
			current.Reset()
			continue
		}
		current.WriteString(line)
		current.WriteByte('\n')
	}
	return append(docs, current.Bytes())
}

func decodeAll(input []byte) ([]object, []string) {
	var objects []object
	var problems []string
	for i, doc := range splitDocuments(input) {
		var raw map[string]any
		if err := yaml.Unmarshal(doc, &raw); err != nil {
			problems = append(problems, fmt.Sprintf("document %d: not YAML: %v", i, err))
			continue
		}
		if len(raw) == 0 { // blank, or only comments (helm's "# Source:" lines)
			continue
		}
		var h header
		if err := yaml.Unmarshal(doc, &h); err != nil {
			problems = append(problems, fmt.Sprintf("document %d: %v", i, err))
			continue
		}
		key := h.APIVersion + "/" + h.Kind
		where := fmt.Sprintf("%s %q", key, h.Metadata.Name)
		o := object{key: key, name: h.Metadata.Name, raw: raw}
		if newObject, ok := builtIn[key]; ok {
			o.typed = newObject()
			if err := yaml.UnmarshalStrict(doc, o.typed); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", where, err))
				continue
			}
		} else if customResources[key] {
			if _, ok := raw["spec"].(map[string]any); !ok {
				problems = append(problems, where+": no spec")
			}
		} else {
			problems = append(problems, fmt.Sprintf("%s: a kind this validator does not know (add it deliberately)", where))
			continue
		}
		problems = append(problems, checkMeta(where, key, h.Metadata)...)
		objects = append(objects, o)
	}
	return objects, problems
}

func checkMeta(where, key string, meta metav1.ObjectMeta) []string {
	var problems []string
	if meta.Name == "" {
		return []string{where + ": no metadata.name"}
	}
	nameErrs := validation.IsDNS1123Subdomain(meta.Name)
	if key == "v1/Service" {
		nameErrs = validation.IsDNS1035Label(meta.Name) // a Service name is a DNS label
	}
	for _, e := range nameErrs {
		problems = append(problems, fmt.Sprintf("%s: name: %s", where, e))
	}
	if key == "batch/v1/CronJob" && len(meta.Name) > 52 { // the API server's limit: Job names get a suffix
		problems = append(problems, where+": a CronJob name must be at most 52 characters")
	}
	for k, v := range meta.Labels {
		for _, e := range validation.IsQualifiedName(k) {
			problems = append(problems, fmt.Sprintf("%s: label key %q: %s", where, k, e))
		}
		for _, e := range validation.IsValidLabelValue(v) {
			problems = append(problems, fmt.Sprintf("%s: label %q value %q: %s", where, k, v, e))
		}
	}
	return problems
}

// podSpecs: every pod template of the rendered workloads, by workload.
func podSpecs(objects []object) map[string]*corev1.PodTemplateSpec {
	specs := map[string]*corev1.PodTemplateSpec{}
	for _, o := range objects {
		switch t := o.typed.(type) {
		case *appsv1.Deployment:
			specs["Deployment "+o.name] = &t.Spec.Template
		case *batchv1.Job:
			specs["Job "+o.name] = &t.Spec.Template
		case *batchv1.CronJob:
			specs["CronJob "+o.name] = &t.Spec.JobTemplate.Spec.Template
		}
	}
	return specs
}

func crossCheck(objects []object, external, externalClaims []string) []string {
	var problems []string
	names := map[string]map[string]bool{}
	for _, o := range objects {
		if names[o.key] == nil {
			names[o.key] = map[string]bool{}
		}
		if names[o.key][o.name] {
			problems = append(problems, fmt.Sprintf("%s %q is rendered twice", o.key, o.name))
		}
		names[o.key][o.name] = true
	}
	secrets := map[string]bool{}
	for _, s := range external {
		secrets[s] = true
	}
	for n := range names["v1/Secret"] {
		secrets[n] = true
	}
	claims := map[string]bool{}
	for _, c := range externalClaims {
		claims[c] = true
	}
	for n := range names["v1/PersistentVolumeClaim"] {
		claims[n] = true
	}
	deployments := map[string]*appsv1.Deployment{}
	for _, o := range objects {
		if d, ok := o.typed.(*appsv1.Deployment); ok {
			deployments[o.name] = d
			selector, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
			if err != nil || selector.Empty() || !selector.Matches(labels.Set(d.Spec.Template.Labels)) {
				problems = append(problems, fmt.Sprintf("Deployment %q: its selector does not select its own pods", o.name))
			}
		}
	}
	selectsADeployment := func(selector labels.Selector) bool {
		for _, d := range deployments {
			if !selector.Empty() && selector.Matches(labels.Set(d.Spec.Template.Labels)) {
				return true
			}
		}
		return false
	}
	for _, o := range objects {
		switch t := o.typed.(type) {
		case *corev1.Service:
			if !selectsADeployment(labels.SelectorFromSet(t.Spec.Selector)) {
				problems = append(problems, fmt.Sprintf("Service %q selects no rendered Deployment's pods", o.name))
			}
		case *policyv1.PodDisruptionBudget:
			selector, err := metav1.LabelSelectorAsSelector(t.Spec.Selector)
			if err != nil || !selectsADeployment(selector) {
				problems = append(problems, fmt.Sprintf("PodDisruptionBudget %q selects no rendered Deployment's pods", o.name))
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			ref := t.Spec.ScaleTargetRef
			if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || deployments[ref.Name] == nil {
				problems = append(problems, fmt.Sprintf("HorizontalPodAutoscaler %q targets %s %q, which is not rendered", o.name, ref.Kind, ref.Name))
			} else if t.Spec.MinReplicas != nil && *t.Spec.MinReplicas > t.Spec.MaxReplicas {
				problems = append(problems, fmt.Sprintf("HorizontalPodAutoscaler %q: minReplicas above maxReplicas", o.name))
			}
		}
	}
	var workloads []string
	specs := podSpecs(objects)
	for w := range specs {
		workloads = append(workloads, w)
	}
	sort.Strings(workloads)
	for _, w := range workloads {
		problems = append(problems, checkPod(w, specs[w], names, secrets, claims)...)
	}
	return problems
}

func checkPod(where string, pod *corev1.PodTemplateSpec, names map[string]map[string]bool, secrets, claims map[string]bool) []string {
	var problems []string
	volumes := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = true
		switch {
		case v.ConfigMap != nil && !names["v1/ConfigMap"][v.ConfigMap.Name]:
			problems = append(problems, fmt.Sprintf("%s: volume %q names ConfigMap %q, which is not rendered", where, v.Name, v.ConfigMap.Name))
		case v.Secret != nil && !secrets[v.Secret.SecretName]:
			problems = append(problems, fmt.Sprintf("%s: volume %q names Secret %q, neither rendered nor declared external", where, v.Name, v.Secret.SecretName))
		case v.PersistentVolumeClaim != nil && !claims[v.PersistentVolumeClaim.ClaimName]:
			problems = append(problems, fmt.Sprintf("%s: volume %q names PersistentVolumeClaim %q, neither rendered nor declared external", where, v.Name, v.PersistentVolumeClaim.ClaimName))
		}
	}
	containers := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	if len(pod.Spec.Containers) == 0 {
		problems = append(problems, where+": no containers")
	}
	for _, c := range containers {
		in := fmt.Sprintf("%s container %q", where, c.Name)
		if c.Image == "" {
			problems = append(problems, in+": no image")
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				problems = append(problems, fmt.Sprintf("%s: mounts volume %q, which the pod does not have", in, m.Name))
			}
		}
		seen := map[string]bool{}
		for _, e := range c.Env {
			if seen[e.Name] {
				problems = append(problems, fmt.Sprintf("%s: variable %s is set twice", in, e.Name))
			}
			seen[e.Name] = true
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && !secrets[e.ValueFrom.SecretKeyRef.Name] {
				problems = append(problems, fmt.Sprintf("%s: %s reads Secret %q, neither rendered nor declared external", in, e.Name, e.ValueFrom.SecretKeyRef.Name))
			}
		}
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		for kind, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
			if probe == nil || probe.HTTPGet == nil {
				continue
			}
			port := probe.HTTPGet.Port
			if port.StrVal != "" {
				if _, ok := ports[port.StrVal]; !ok {
					problems = append(problems, fmt.Sprintf("%s: %s probe on port %q, which the container does not name", in, kind, port.StrVal))
				}
			}
		}
	}
	return problems
}
