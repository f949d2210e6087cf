"""The functional API: batch inference as plain function calls."""
