"""The built-in tiny trainer: a small, real LoRA trainer that reads sd-scripts' files and behaves
like sd-scripts at every seam kr watches (see kohya_runner/tiny/train.py).

    python -m kohya_runner.tiny --config_file args.toml [sd-scripts options]       # sdxl_train_network.py
    python -m kohya_runner.tiny.sd15 --config_file args.toml [sd-scripts options]  # train_network.py

Python API (imported lazily, so `import kohya_runner.tiny` stays cheap):
    build_tiny_base(dest, family="sdxl", seed=0) -> Path
    write_style_dataset(dest, style="marker", count=32, seed=0, size=64, plain=0) -> Path
    load_pipeline(base_dir, lora_path=None, multiplier=1.0) -> TinyPipeline
    generate(pipe, prompt, seed=0, steps=20, w=64, h=64, cfg=7.5, negative=None) -> PIL.Image
"""

from __future__ import annotations

_EXPORTS = {
    "build_tiny_base": "kohya_runner.tiny.base",
    "write_style_dataset": "kohya_runner.tiny.styles",
    "load_pipeline": "kohya_runner.tiny.infer",
    "generate": "kohya_runner.tiny.infer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kohya_runner.tiny' has no attribute {name!r}")
