"""The measurements of benchmarks/cpu_ops.py, by what they time: kernels/ (kernel_choices), train/
(train_choices), process-wide settings (process_choices); the timing harness they share (timing)."""
