"""Running quantized layers: the backend interface and registry (golden, triton, rtl,
remote), the TCP server and client, hardware-in-the-loop layers, and backend comparisons."""
