"""Lowering a model to hardware: fold planning, MST scheduling, top-level assembly, Verilog
emission, and running the tools on the result (cocotb benches behind ``bnnfab verify``,
synthesis). Not written yet."""
