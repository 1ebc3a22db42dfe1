"""The environment every sd-scripts process gets (§1.4, §7.8): no code path may reach the network."""

from __future__ import annotations

OFFLINE_ENV = {
    "PYTHONUNBUFFERED": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "disabled",
    "COLUMNS": "200",  # Rich wraps log lines at the console width (80 when not a TTY), §5.3
}
