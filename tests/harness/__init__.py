"""The integration test tier: a real control plane, MinIO, and a pod runner for the kubelet.

Everything here starts real programs (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, MinIO) built by ``make tools``. The only pretend part is
:mod:`tests.harness.images`, which says which local program an image name runs.
"""
