"""Benchmarks: measured train steps and samplers (`measure`), the GPU suite of cases each in its
own process (`suite`), FLOPs and memory from compiled programs (`compiled`), and the
VideoFusion / VDM efficiency pair (`efficiency`). The command line is `python -m vfjax.bench`."""
