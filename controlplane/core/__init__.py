"""Sans-IO PTP protocol core: events with timestamps in, actions out. No sockets, clocks or BPF."""
