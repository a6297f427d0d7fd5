//! vc-controller: turns each VirtualCluster into a running tenant control plane and
//! clustertree, claims and releases host nodes, and cleans up on delete.
