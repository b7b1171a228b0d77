"""ptp-switch eBPF dataplane: BPF C in dataplane/bpf/, loaded by BCC, attached with pyroute2."""
