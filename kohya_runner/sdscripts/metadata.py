"""The LoRA header sd-scripts writes: which `ss_*` keys it keeps with --no_metadata (contract §4.4)."""

from __future__ import annotations

MINIMAL_SS_KEYS = ("ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha",
                   "ss_network_args")
