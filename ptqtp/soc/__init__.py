"""The engine in a LiteX system-on-chip: gateware (Migen), per-board systems, the host driver,
the whole-SoC Verilator simulation and the bitstream flow. docs/SOC.md; the address map is
docs/SPEC.md section 11."""
