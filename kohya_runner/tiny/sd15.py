"""`python -m kohya_runner.tiny.sd15 --config_file args.toml [...]`: behaves like sd-scripts' train_network.py
(SD 1.x: one text encoder, `lora_te_` keys, diffusers-style U-Net names)."""

from kohya_runner.tiny.train import main

if __name__ == "__main__":
    main("sd15")
