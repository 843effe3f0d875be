package main

// `kubelet`: pods without containers. It registers its Nodes, schedules pending pods onto them
// (fewest pods first, honouring nodeSelector and cordons), gives each pod addresses from its
// node's pod CIDRs, and then plays the kubelet's part of the pod lifecycle:
//
//   - ContainersReady turns True `ready-after` after the start (per pod: the annotation
//     sandbox.tgb-agent.io/ready-after, a Go duration or "never"); the annotation
//     sandbox.tgb-agent.io/ready: "false" makes the readiness probe fail until it is removed.
//   - Ready is True only when ContainersReady is and every spec.readinessGates condition is True,
//     as the kubelet computes it; it follows gate conditions other controllers write.
//   - A deleted pod keeps running (its endpoint is `terminating`) until its process "exits",
//     `stop-after` after the delete (per pod: sandbox.tgb-agent.io/stop-after), never longer than
//     its grace period; then its containers stop and it is removed.

import (
	"context"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
)

const (
	simulatedLabel      = "sandbox.tgb-agent.io/kubelet"
	annotationReadyAfter = "sandbox.tgb-agent.io/ready-after"
	annotationReady      = "sandbox.tgb-agent.io/ready"
	annotationStopAfter  = "sandbox.tgb-agent.io/stop-after"
)

type nodeFlags []string

func (n *nodeFlags) String() string     { return strings.Join(*n, " ") }
func (n *nodeFlags) Set(v string) error { *n = append(*n, v); return nil }

type kubelet struct {
	client     kubernetes.Interface
	pods       corelisters.PodLister
	nodes      corelisters.NodeLister
	queue      workqueue.TypedRateLimitingInterface[string]
	readyAfter time.Duration
	stopAfter  time.Duration

	reuseAfter time.Duration

	mu       sync.Mutex
	used     map[string]string // address -> pod key, over every simulated node
	podAddrs map[string][]string
	freed    map[string]time.Time // address -> when its pod went: reused only after reuseAfter
}

func runKubelet(args []string) error {
	fs := flag.NewFlagSet("kubelet", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of an identity that may write nodes and pods")
	var nodes nodeFlags
	fs.Var(&nodes, "node", "NAME=POD_CIDR[,POD_CIDR]: a node to register and run pods on (repeatable)")
	readyAfter := fs.Duration("ready-after", time.Second, "from a pod's start until its containers are ready")
	stopAfter := fs.Duration("stop-after", 2*time.Second, "from a pod's deletion until its process exits (at most its grace period)")
	reuseAfter := fs.Duration("reuse-after", 30*time.Second, "how long a freed pod address rests before another pod gets it (the VPC CNI's cooldown)")
	workers := fs.Int("workers", 4, "pods handled at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	config.QPS, config.Burst = 200, 400
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	for _, spec := range nodes {
		if err := registerNode(ctx, client, spec); err != nil {
			return err
		}
	}

	factory := informers.NewSharedInformerFactory(client, 0)
	k := &kubelet{
		client:     client,
		pods:       factory.Core().V1().Pods().Lister(),
		nodes:      factory.Core().V1().Nodes().Lister(),
		queue:      workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		readyAfter: *readyAfter,
		stopAfter:  *stopAfter,
		reuseAfter: *reuseAfter,
		used:       map[string]string{},
		podAddrs:   map[string][]string{},
		freed:      map[string]time.Time{},
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	if _, err := factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }, DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	// A node that becomes schedulable may take pending pods.
	if _, err := factory.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { k.enqueuePending() }, UpdateFunc: func(any, any) { k.enqueuePending() },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	if err := k.recordAddresses(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "kubelet: running %d node(s)\n", len(nodes))
	var wg sync.WaitGroup
	for i := 0; i < *workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	k.queue.ShutDown()
	wg.Wait()
	return nil
}

// registerNode creates (or takes over) a Ready node with the given pod CIDRs.
func registerNode(ctx context.Context, client kubernetes.Interface, spec string) error {
	name, cidrText, ok := strings.Cut(spec, "=")
	if !ok || name == "" || cidrText == "" {
		return fmt.Errorf("--node %q: want NAME=POD_CIDR[,POD_CIDR]", spec)
	}
	cidrs := strings.Split(cidrText, ",")
	var hostIP string
	for _, c := range cidrs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			return fmt.Errorf("--node %q: %v", spec, err)
		}
		if hostIP == "" {
			hostIP = nthAddress(n, 1).String()
		}
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			simulatedLabel: "simulated", corev1.LabelHostname: name, corev1.LabelOSStable: "linux",
			// These nodes stand for no EC2 instance: instance-mode bindings leave them out, as a
			// load balancer would; instance-mode tests register nodes of their own.
			corev1.LabelNodeExcludeBalancers: "true",
		}},
		Spec: corev1.NodeSpec{PodCIDR: cidrs[0], PodCIDRs: cidrs},
	}
	created, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("registering node %s: %w", name, err)
	}
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"),
		corev1.ResourcePods: resource.MustParse("250"),
	}
	created.Status = corev1.NodeStatus{
		Capacity: capacity, Allocatable: capacity, Phase: corev1.NodeRunning,
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: hostIP}, {Type: corev1.NodeHostName, Address: name}},
		Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status (simulated)", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: now, LastTransitionTime: now},
		},
		NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64", ContainerRuntimeVersion: "simulated://1"},
	}
	_, err = client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

func (k *kubelet) next(ctx context.Context) bool {
	key, shutdown := k.queue.Get()
	if shutdown {
		return false
	}
	defer k.queue.Done(key)
	after, err := k.sync(ctx, key)
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "kubelet: %s: %v (retrying)\n", key, err)
		k.queue.AddRateLimited(key)
	case after > 0:
		k.queue.Forget(key)
		k.queue.AddAfter(key, after)
	default:
		k.queue.Forget(key)
	}
	return true
}

// sync moves one pod a step along its lifecycle; it returns when to look at the pod again.
func (k *kubelet) sync(ctx context.Context, key string) (time.Duration, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return 0, nil
	}
	pod, err := k.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		k.release(key)
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if pod.Spec.NodeName == "" {
		if pod.DeletionTimestamp != nil {
			return 0, nil
		}
		return 0, k.schedule(ctx, pod)
	}
	if !k.simulated(pod.Spec.NodeName) || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return 0, nil
	}
	if pod.DeletionTimestamp != nil {
		return k.terminate(ctx, pod)
	}
	if pod.Status.PodIP == "" {
		return k.start(ctx, key, pod)
	}
	return k.probe(ctx, pod)
}

func (k *kubelet) simulated(nodeName string) bool {
	node, err := k.nodes.Get(nodeName)
	return err == nil && node.Labels[simulatedLabel] == "simulated"
}

// schedule binds a pending pod to the schedulable simulated node with the fewest pods.
func (k *kubelet) schedule(ctx context.Context, pod *corev1.Pod) error {
	nodes, err := k.nodes.List(labels.SelectorFromSet(labels.Set{simulatedLabel: "simulated"}))
	if err != nil {
		return err
	}
	selector := labels.SelectorFromSet(pod.Spec.NodeSelector)
	best, bestCount := "", 0
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	for _, node := range nodes {
		if node.Spec.Unschedulable || !nodeReady(node) || !selector.Matches(labels.Set(node.Labels)) {
			continue
		}
		count := k.podsOn(node.Name)
		if best == "" || count < bestCount {
			best, bestCount = node.Name, count
		}
	}
	if best == "" {
		return nil // pending until a node fits (node events re-queue it)
	}
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: best},
	}
	err = k.client.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // bound meanwhile or gone: the next event says which
	}
	return err
}

func (k *kubelet) podsOn(node string) int {
	pods, _ := k.pods.List(labels.Everything())
	n := 0
	for _, p := range pods {
		if p.Spec.NodeName == node {
			n++
		}
	}
	return n
}

func (k *kubelet) enqueuePending() {
	pods, _ := k.pods.List(labels.Everything())
	for _, p := range pods {
		if p.Spec.NodeName == "" {
			if key, err := cache.MetaNamespaceKeyFunc(p); err == nil {
				k.queue.Add(key)
			}
		}
	}
}

func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// start gives the pod its addresses and runs its containers (not ready yet).
func (k *kubelet) start(ctx context.Context, key string, pod *corev1.Pod) (time.Duration, error) {
	node, err := k.nodes.Get(pod.Spec.NodeName)
	if err != nil {
		return 0, err
	}
	addrs, err := k.allocate(key, node)
	if err != nil {
		return 0, err
	}
	now := metav1.Now()
	updated := pod.DeepCopy()
	status := &updated.Status
	status.Phase = corev1.PodRunning
	status.HostIP = node.Status.Addresses[0].Address
	status.HostIPs = []corev1.HostIP{{IP: status.HostIP}}
	status.PodIP = addrs[0]
	status.PodIPs = nil
	for _, a := range addrs {
		status.PodIPs = append(status.PodIPs, corev1.PodIP{IP: a})
	}
	status.StartTime = &now
	for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.PodScheduled} {
		setCondition(status, t, corev1.ConditionTrue, "", "", now)
	}
	status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		status.ContainerStatuses = append(status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: "simulated://" + c.Image, Started: ptr(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	applyReadiness(updated, false, now)
	if _, err := k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{}); err != nil {
		// The addresses stay the pod's until it is gone: a retry gives it the same ones.
		if apierrors.IsNotFound(err) {
			k.release(key)
			return 0, nil
		}
		if apierrors.IsConflict(err) {
			return 0, nil
		}
		return 0, err
	}
	return k.readyDelay(pod), nil
}

// probe keeps ContainersReady and Ready as the kubelet would compute them now.
func (k *kubelet) probe(ctx context.Context, pod *corev1.Pod) (time.Duration, error) {
	delay := k.readyDelay(pod)
	containersReady, after := false, time.Duration(0)
	switch {
	case pod.Annotations[annotationReady] == "false" || delay < 0:
	case pod.Status.StartTime == nil:
		containersReady = true
	default:
		remaining := time.Until(pod.Status.StartTime.Add(delay))
		containersReady = remaining <= 0
		if !containersReady {
			after = remaining
		}
	}
	updated := pod.DeepCopy()
	if !applyReadiness(updated, containersReady, metav1.Now()) {
		return after, nil
	}
	_, err := k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return 0, nil // a newer version is on its way through the informer
	}
	return after, err
}

// terminate removes a deleted pod once its process has exited.
func (k *kubelet) terminate(ctx context.Context, pod *corev1.Pod) (time.Duration, error) {
	grace := time.Duration(0)
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	}
	stop := k.stopAfter
	if v, ok := pod.Annotations[annotationStopAfter]; ok {
		if d, err := time.ParseDuration(v); err == nil {
			stop = d
		}
	}
	if stop > grace {
		stop = grace
	}
	requested := pod.DeletionTimestamp.Add(-grace)
	if remaining := time.Until(requested.Add(stop)); remaining > 0 {
		return remaining, nil
	}
	zero := int64(0)
	err := k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &pod.UID},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return 0, nil
	}
	return 0, err
}

func (k *kubelet) readyDelay(pod *corev1.Pod) time.Duration {
	v, ok := pod.Annotations[annotationReadyAfter]
	if !ok {
		return k.readyAfter
	}
	if v == "never" {
		return -1
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return k.readyAfter
	}
	return d
}

// applyReadiness sets ContainersReady, the containers' ready flags and Ready (containers ready
// and every readiness gate True); it says whether anything changed.
func applyReadiness(pod *corev1.Pod, containersReady bool, now metav1.Time) bool {
	status := &pod.Status
	before := fmt.Sprint(conditionOf(status, corev1.ContainersReady), conditionOf(status, corev1.PodReady))
	for i := range status.ContainerStatuses {
		status.ContainerStatuses[i].Ready = containersReady
	}
	if containersReady {
		setCondition(status, corev1.ContainersReady, corev1.ConditionTrue, "", "", now)
	} else {
		setCondition(status, corev1.ContainersReady, corev1.ConditionFalse, "ContainersNotReady", unreadyMessage(pod), now)
	}
	var unmet []string
	for _, gate := range pod.Spec.ReadinessGates {
		c := conditionOf(status, gate.ConditionType)
		if c == nil {
			unmet = append(unmet, fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", gate.ConditionType))
		} else if c.Status != corev1.ConditionTrue {
			unmet = append(unmet, fmt.Sprintf("the status of pod readiness gate %q is not \"True\", but %s", gate.ConditionType, c.Status))
		}
	}
	switch {
	case !containersReady:
		setCondition(status, corev1.PodReady, corev1.ConditionFalse, "ContainersNotReady", unreadyMessage(pod), now)
	case len(unmet) > 0:
		setCondition(status, corev1.PodReady, corev1.ConditionFalse, "ReadinessGatesNotReady", strings.Join(unmet, ", "), now)
	default:
		setCondition(status, corev1.PodReady, corev1.ConditionTrue, "", "", now)
	}
	return before != fmt.Sprint(conditionOf(status, corev1.ContainersReady), conditionOf(status, corev1.PodReady))
}

func unreadyMessage(pod *corev1.Pod) string {
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	return fmt.Sprintf("containers with unready status: [%s]", strings.Join(names, " "))
}

func conditionOf(status *corev1.PodStatus, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range status.Conditions {
		if status.Conditions[i].Type == t {
			return &status.Conditions[i]
		}
	}
	return nil
}

// setCondition sets a condition, keeping its transition time when the status is unchanged.
func setCondition(status *corev1.PodStatus, t corev1.PodConditionType, s corev1.ConditionStatus, reason, message string, now metav1.Time) {
	c := conditionOf(status, t)
	if c == nil {
		status.Conditions = append(status.Conditions, corev1.PodCondition{Type: t})
		c = &status.Conditions[len(status.Conditions)-1]
	}
	if c.Status != s {
		c.LastTransitionTime = now
	}
	c.Status, c.Reason, c.Message = s, reason, message
}

// recordAddresses marks the addresses of pods that already run (a restarted kubelet).
func (k *kubelet) recordAddresses() error {
	pods, err := k.pods.List(labels.Everything())
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range pods {
		key, _ := cache.MetaNamespaceKeyFunc(p)
		for _, ip := range p.Status.PodIPs {
			k.used[ip.IP] = key
			k.podAddrs[key] = append(k.podAddrs[key], ip.IP)
		}
	}
	return nil
}

// allocate takes the lowest free address of each of the node's pod CIDRs (the first is the node's).
func (k *kubelet) allocate(key string, node *corev1.Node) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if addrs, ok := k.podAddrs[key]; ok {
		return addrs, nil
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	var addrs []string
	for _, c := range cidrs {
		_, network, err := net.ParseCIDR(c)
		if err != nil {
			return nil, fmt.Errorf("node %s: pod CIDR %q: %v", node.Name, c, err)
		}
		found := ""
		for i := int64(2); ; i++ {
			ip := nthAddress(network, i)
			if ip == nil || !network.Contains(ip) {
				break
			}
			_, taken := k.used[ip.String()]
			resting := time.Since(k.freed[ip.String()]) < k.reuseAfter
			if !taken && !resting {
				found = ip.String()
				break
			}
		}
		if found == "" {
			return nil, fmt.Errorf("node %s: pod CIDR %s is full", node.Name, c)
		}
		k.used[found] = key
		delete(k.freed, found)
		addrs = append(addrs, found)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("node %s has no pod CIDR", node.Name)
	}
	k.podAddrs[key] = addrs
	return addrs, nil
}

func (k *kubelet) release(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, a := range k.podAddrs[key] {
		if k.used[a] == key {
			delete(k.used, a)
			k.freed[a] = time.Now()
		}
	}
	delete(k.podAddrs, key)
}

// nthAddress is the network address plus n.
func nthAddress(network *net.IPNet, n int64) net.IP {
	base := new(big.Int).SetBytes(network.IP)
	ip := new(big.Int).Add(base, big.NewInt(n)).Bytes()
	out := make(net.IP, len(network.IP))
	if len(ip) > len(out) {
		return nil
	}
	copy(out[len(out)-len(ip):], ip)
	return out
}

func ptr[T any](v T) *T { return &v }
