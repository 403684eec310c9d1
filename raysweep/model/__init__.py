"""Models: sizes that count their own parameters and FLOPs (`args`, torch-free), the task model
and its heads (nn only), loading and saving, and `parallelize` (FSDP2)."""
