"""Everything true of kohya-ss/sd-scripts at the pinned commit (vendor/sd-scripts-args.json, 48d368f),
and nothing else. Moving the pin forward means editing this package (and vendor/ data) only.

    options         the option manifest, choices, refused and kr-managed options, value checks
    training_args   Spec -> the flat --config_file options (RenderPaths, TrainingArgs)
    dataset_config  the --dataset_config TOML and its strict schema
    subset          one subset's settings as sd-scripts reads them, and its start-up asserts
    images          which image files it reads
    captions        how it finds and reads captions (first line, prefix/suffix, keep_tokens)
    buckets         aspect-ratio buckets
    steps           step, save/rotation and sample arithmetic
    lora_size       the size of a networks.lora file
    architectures   SD 1.5 / SDXL model configs and the layers LoRA adapts
    cache_files     latent / text-encoder cache file names and arrays
    outputs         checkpoint, sample, state and TensorBoard names
    metadata        the ss_* header keys it keeps with --no_metadata
    prompts         the sample prompts file
    logs            console lines and failure signatures
    environment     the offline environment of every trainer process
    validation      the held-out split (validation_split / validation_seed)
    gen_img         the image generator's command line and prompt-file lines (post-hoc sampling)
    drift_probe     run by the trainer's python to dump its argparse options (imports nothing of kr)
    score_probe     run by the trainer's python to score LoRA checkpoints (imports nothing of kr)

Modules here take kr's Spec duck-typed and never import spec, run, ledger or the CLI.
Import the submodule you need: `from kohya_runner.sdscripts import buckets`.
"""

from __future__ import annotations
