"""Energy accounting: a fixed-cadence sampler and named per-request measurement windows."""
