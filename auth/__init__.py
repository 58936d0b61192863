"""Authentication: argon2id passwords, JWT tokens, users and the /auth routes."""
