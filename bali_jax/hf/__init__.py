"""Hugging Face interop: import (no torch), export, the name map, the
tokenizer."""
