"""``qwen-image``: a command-line client of Qwen Image Service, built on its public HTTP API only."""
