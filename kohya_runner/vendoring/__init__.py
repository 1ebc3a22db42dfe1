"""The library behind `kr vendor ...`: installing, checking and bundling the pinned sd-scripts.

kr renders arguments for one sd-scripts commit (vendor/pin.toml). This package puts exactly that
commit on a machine and keeps checking it is still there, one noun per module:

- pin: the pin, and where checkout, trainer venv and tokenizers live (KR_* overrides, defaults).
- trees: scanning a checkout into git tree entries; naming the files that differ from the pin (with the
  pinned tree's file list shipped beside pin.toml, vendor/sd-scripts-files.gz).
- checkout: install from a checkout folder or a tarball/zip (`install`), or a git clone (`install_git`,
  the only networked path besides `bundle`); always staged beside the destination, verified against the pinned
  git tree id, then renamed into place.
- env: the trainer's own venv (torch first, then sd-scripts' requirements.txt; CPU torch unless
  kohya_runner.gpus finds an NVIDIA driver).
- bundles: one tarball carrying checkout + wheelhouse + tokenizer source to an air-gapped machine
  (`bundle`), every member sha256-checked on arrival (`install_bundle`).
- installed: `verify` (tree id, changed files, trainer-created files ignored) and `status`.
- optiondrift: `drift`, the trainer scripts' real argparse options against the pinned option manifest.

Named `vendoring` because `kohya_runner.vendor` is the data package of the top-level vendor/ folder
in a wheel (pin.toml, sd-scripts-args.json); modules are not named after the functions they export,
so `vendoring.install` is always the function. Imports that cost start-up time (shutil, tempfile,
tarfile, subprocess, hashlib, kohya_runner.tokenizers) happen inside the functions that need them.
"""

from __future__ import annotations

from ..gittree import git_tree_hash, tarball_tree_hash
from .bundles import BUNDLE_FORMAT, BUNDLE_TOP, OPEN_CLIP_REQUIREMENT, BundleInstall, BundleResult, bundle, install_bundle
from .optiondrift import OFFLINE_ENV, Drift, OptionChange, diff_manifests, drift
from .env import (
    ENV_RECORD,
    TORCH_CPU_INDEX,
    TORCH_VERSION,
    TORCHVISION_VERSION,
    TrainerEnv,
    choose_torch_spec,
    create_trainer_env,
    split_torch_spec,
)
from .checkout import InstallResult, install, install_git
from .pin import (
    RECORD_NAME,
    Pin,
    default_env_dir,
    default_sd_scripts_dir,
    default_tokenizer_dir,
    find_sd_scripts,
    find_trainer_python,
    load_pin,
    record_path,
    vendor_root,
)
from .installed import VerifyResult, python_facts, status, verify
from .trees import SHIPPED_FILE_LIST, file_list, scan_checkout

__all__ = [
    "Pin",
    "load_pin",
    "git_tree_hash",
    "tarball_tree_hash",
    "vendor_root",
    "default_sd_scripts_dir",
    "default_env_dir",
    "default_tokenizer_dir",
    "find_sd_scripts",
    "find_trainer_python",
    "InstallResult",
    "install",
    "install_git",
    "record_path",
    "file_list",
    "scan_checkout",
    "TrainerEnv",
    "choose_torch_spec",
    "split_torch_spec",
    "create_trainer_env",
    "BundleResult",
    "BundleInstall",
    "bundle",
    "install_bundle",
    "VerifyResult",
    "verify",
    "python_facts",
    "status",
    "OptionChange",
    "Drift",
    "drift",
    "diff_manifests",
    "RECORD_NAME",
    "ENV_RECORD",
    "SHIPPED_FILE_LIST",
    "BUNDLE_FORMAT",
    "BUNDLE_TOP",
    "OPEN_CLIP_REQUIREMENT",
    "TORCH_VERSION",
    "TORCHVISION_VERSION",
    "TORCH_CPU_INDEX",
    "OFFLINE_ENV",
]
