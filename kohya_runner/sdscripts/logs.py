"""sd-scripts' console output (§5.3–§5.6): what the monitor matches. English prefixes only (its
messages are bilingual)."""

from __future__ import annotations

import re

TOTAL_STEPS = re.compile(r"total optimization steps / .*?:\s*(\d+)")
NUM_EPOCHS = re.compile(r"num epochs / .*?:\s*(\d+)")
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)\s*$")
SAVING_CHECKPOINT = re.compile(r"saving checkpoint: (.+)$")
REMOVING_CHECKPOINT = re.compile(r"removing old checkpoint: (.+)$")
SAMPLING = re.compile(r"generating sample images at step")
# one sample image starts (train_util.sample_image_inference logs the prompt first); `negative_prompt:` is not it
SAMPLE_PROMPT = re.compile(r"(?:^|\sINFO\s+)prompt: ")
MODEL_SAVED = re.compile(r"(^|\s)model saved\.\s*$")
NO_DATA = re.compile(r"No data found\. Please verify")
CACHING = re.compile(r"caching latents|caching Text Encoder outputs")
# tqdm: `steps:  10%|█         | 200/2000 [03:10<28:30,  1.05it/s, avr_loss=0.0912]`
STEPS_BAR = re.compile(
    r"^steps:\s*\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[(?P<elapsed>[^<\]]*)<(?P<eta>[^,\]]*)"
    r"(?:,\s*(?P<rate>[\d.]+|\?)(?P<unit>it/s|s/it))?(?P<postfix>[^\]]*)\]")
AVR_LOSS = re.compile(r"avr_loss=([^,\]\s]+)")
EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Invalid|Exit)):?\s*(?P<message>.*)$")

# Failure signatures, most specific first: (reason, pattern, what happened).
FAILURES = [
    ("cuda_oom", re.compile(r"CUDA out of memory|OutOfMemoryError|out of memory on device"), "CUDA ran out of memory"),
    ("no_data", NO_DATA, "sd-scripts found no images ('No data found') and exited 0 without training"),
    ("dataset_config", re.compile(r"MultipleInvalid|extra keys not allowed @|required key not provided @|"
                                  r"expected \w+ for dictionary value @"), "the dataset TOML broke sd-scripts' schema"),
    ("missing_tokenizer", re.compile(r"Can't load tokenizer|expected str, bytes or os\.PathLike object, not NoneType"),
     "a tokenizer could not be loaded offline"),
    ("missing_model", re.compile(r"is neither a valid local path nor a valid repo id|model is not found as a file|"
                                 r"Cannot load model|OfflineModeIsEnabled|does not appear to have a file named"),
     "the base model could not be loaded"),
    ("missing_package", re.compile(r"ImportError: No \w+|ModuleNotFoundError: No module named"), "an optional package is missing"),
    ("dataset_file", re.compile(r"caption file is empty|illegal char in file|Error loading file:|UnicodeDecodeError"),
     "a dataset file could not be read"),
    ("unknown_optimizer", re.compile(r"module 'torch\.optim' has no attribute"), "the optimizer name is unknown"),
    ("config_missing", re.compile(r"\.toml not found\."), "the training TOML was not found"),
    ("bad_option", re.compile(r"error: unrecognized arguments|error: argument --"), "sd-scripts rejected a command-line option"),
]
