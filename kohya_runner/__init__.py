"""kohya-runner (`kr`): a reproducible, offline run manager for kohya-ss/sd-scripts LoRA training."""

__version__ = "0.1.0"
