"""Dataset checks for sd-scripts LoRA training: scan, probe, check, captions, stats, manifest.

The library behind `kr dataset check | caption | stats`, the pre-run check of `kr run` and the dataset
manifest in the run archive. What sd-scripts itself does (which files it reads, how it reads captions,
buckets, step arithmetic, LoRA size) lives in kohya_runner.sdscripts; this package calls down into it
and turns what it would do into findings before a GPU hour is spent on them.

    _scan      which files sd-scripts would use (no file opened)
    _probe     one read and decode per image: size, format, hashes, fingerprint
    checks/    findings by concern: settings, layout, caches, images, duplicates, captions, buckets
    _check     check() and its CheckReport
    _captions  caption(): the ONE writer into a user's dataset folder (caption files, with a backup)
    _stats     stats()
    _manifest  manifest(): names, sizes and hashes for the run archive
    _settings  DatasetSettings / TrainingPlan and their spec mappings (defined in sdscripts)

Nothing here writes into the dataset folder except caption(). Heavy imports (PIL, numpy,
transformers) happen inside the functions that need them, so importing this package stays cheap.
"""

from __future__ import annotations

from ..sdscripts.buckets import (
    Bucket, BucketAssignment, BucketTable, adjust_bucket_bounds, bucket_resolutions, bucket_table,
)
from ..sdscripts.captions import CaptionRead, processed_caption, read_caption, split_fixed_tags
from ..sdscripts.images import BASE_IMAGE_EXTENSIONS, PLUGIN_IMAGE_EXTENSIONS, image_extensions
from ..sdscripts.lora_size import LoraSize, lora_file_size
from ..sdscripts.outputs import checkpoint_names
from ..sdscripts.steps import StepMath, step_math
from ._captions import CAPTION_BACKUP_DIR, CaptionChange, CaptionPlan, caption, caption_from_filename
from ._check import CheckReport, check
from ._findings import ERROR, FINDING_CODES, WARNING, Finding
from ._manifest import manifest
from ._probe import ImageProbe, image_header, probe_image, probe_images
from ._scan import DatasetImage, DatasetScan, scan
from ._settings import DatasetSettings, TrainingPlan, plan_from_spec, settings_from_spec
from ._stats import DatasetStats, stats
from ._tokens import TokenCounter, estimate_clip_tokens
from .checks.duplicates import near_duplicate_pairs


__all__ = [
    "BASE_IMAGE_EXTENSIONS", "CAPTION_BACKUP_DIR", "ERROR", "FINDING_CODES", "PLUGIN_IMAGE_EXTENSIONS", "WARNING",
    "Bucket", "BucketAssignment", "BucketTable", "CaptionChange", "CaptionPlan", "CaptionRead", "CheckReport",
    "DatasetImage", "DatasetScan", "DatasetSettings", "DatasetStats", "Finding", "ImageProbe", "LoraSize", "StepMath",
    "TokenCounter", "TrainingPlan", "adjust_bucket_bounds", "bucket_resolutions", "bucket_table", "caption",
    "caption_from_filename", "check", "checkpoint_names", "estimate_clip_tokens", "image_extensions", "image_header",
    "lora_file_size", "manifest", "near_duplicate_pairs", "plan_from_spec", "probe_image", "probe_images",
    "processed_caption", "read_caption", "scan", "settings_from_spec", "split_fixed_tags", "stats", "step_math",
]
