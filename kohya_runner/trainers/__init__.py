"""Trainer backends: how to launch sd-scripts or the built-in tiny trainer (argv, env, cwd)."""
