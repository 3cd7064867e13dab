"""cocotb benches and simulation runners (imported as ``ptqtp.sim``)."""
