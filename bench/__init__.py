"""Side-by-side benchmarks: our methods next to captum / lime and a bare forward pass, in one process."""
