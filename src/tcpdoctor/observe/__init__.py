"""Reading a live kernel: sockets, sysctls, counters, owners, namespaces."""
