"""The command line of the scripts: `hydra_main` (main.py), which checks a command line against the composed
config before Hydra runs it (command_line.py) and ends every mistake in one line."""
