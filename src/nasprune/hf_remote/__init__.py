"""Files shipped inside every export; importable by nasprune itself, but self-contained."""
