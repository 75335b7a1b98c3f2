"""Helpers shared by the tests and the benchmarks (processes, run files, hand-made rollouts,
floods, the ConnectX reference, a local Ray cluster). Not part of the installed system."""
