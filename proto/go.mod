module smartbackend.dev/proto

go 1.24.0

require (
	github.com/container-storage-interface/spec v1.12.0
	k8s.io/kubelet v0.34.4
)
