"""`python -m kohya_runner.tiny --config_file args.toml [...]`: behaves like sd-scripts' sdxl_train_network.py."""

from kohya_runner.tiny.train import main

if __name__ == "__main__":
    main("sdxl")
